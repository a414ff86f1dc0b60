"""Data sets and batched augmentation."""
