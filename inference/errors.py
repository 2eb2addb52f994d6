"""The inference package's error root: every error it raises on purpose is one of these."""


class InferenceError(Exception):
    """Root of the errors the inference package raises on purpose."""


class ModelError(InferenceError, ValueError):
    """A model or its manifest is invalid, corrupt or does not match (the message names the file)."""


class ModelNotFound(InferenceError, FileNotFoundError):
    """A model file or its manifest does not exist (the message names the path)."""


class BackendUnavailable(InferenceError, RuntimeError):
    """Neither LiteRT (ai-edge-litert) nor tflite-runtime can be imported."""


class BadImage(InferenceError, ValueError):
    """An image given to a model is not a usable HxWx3 (or HxW) uint8 array."""
