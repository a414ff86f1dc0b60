"""Fast inference: BN folding, export, quantization, benchmarking, prediction."""
