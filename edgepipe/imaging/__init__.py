"""Images shared by stages: the sample photos, and preprocessing as an ONNX graph (PIL-exact
resampling, joining it onto a model)."""
