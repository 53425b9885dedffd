"""peftref: the reference for weight-delta parameter-efficient fine-tuning.

Subpackages: ``refimpl`` (NumPy/SciPy reference), ``torch`` (accelerated path), ``checkpoints`` (adapter files),
``conformance`` (test vectors and runner), ``export`` (fold adapters into ONNX).
"""

__version__ = "0.1.0"
