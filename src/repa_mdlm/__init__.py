"""repa-mdlm: REPresentation Alignment for masked diffusion language models.

One module per concept of the paper: data, model, diffusion, repa, teachers, train,
evaluate, aggregate and plots; `cli` holds the entry points the workflow calls.
"""

__version__ = "0.1.0"
