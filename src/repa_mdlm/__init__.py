"""repa-mdlm: REPresentation Alignment for masked diffusion language models.

One subpackage per layer, each importing only the layers below it (tests/test_layers.py): config,
data, model, teachers, training, evaluation, analysis, reporting, bench, workflow; `io` and `layout`
at the bottom. `workflow.cli` holds the entry points the rules call (docs/architecture.md).
"""

__version__ = "0.1.0"
