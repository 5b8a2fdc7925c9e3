"""fleet: a catalog of open LLMs deployed as scale-to-zero vLLM endpoints on Modal.

This file must stay free of imports: the generated apps ship it into the container image beside
`fleet/runtime.py`, and `fleet --help` must start fast.
"""

__version__ = "0.1.0"
