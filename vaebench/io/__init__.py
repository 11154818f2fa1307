"""Reading and writing files: bounded, validated, atomic; the IDX data sets."""
