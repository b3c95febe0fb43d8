"""Model files shared by stages: torch models (builder + weights), ONNX files, checkpoints,
pretrained weights, files shipped by packages, module sources for cache keys, and the structural
transforms a torch model's builder replays."""
