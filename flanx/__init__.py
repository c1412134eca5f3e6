"""flanx: Flan-style instruction tuning of T5-family models in JAX, exported to Hugging Face.

Submodules are imported on use (`flanx.model`, `flanx.train`, …) so `import flanx` stays cheap.
"""

__version__ = '0.1.0'
