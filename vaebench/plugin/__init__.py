"""How a framework plugs in: the contract, engines, environment, registry, profiles, the numpy backend."""
