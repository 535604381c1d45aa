"""uvq-int8: quantized TFLite backends for UVQ 1.5, chosen by configuration."""

__version__ = "0.1.0"
