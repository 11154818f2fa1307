"""What is computed: layers and paddings, the model catalogue, weights, layouts, the loss written once on Ops,
the float64 reference, and the batch streams."""
