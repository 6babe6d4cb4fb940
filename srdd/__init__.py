"""srdd: static relative deadzone detection for 4-bit quantized LLMs.

The package root only carries the version so that `import srdd` stays cheap;
the heavy pieces (torch kernels, models) live in submodules.
"""

__version__ = "0.1.0"
