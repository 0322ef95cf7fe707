"""Synthetic data with planted structure, and its ground truth: the demo's corpus and the basis
of the calibrated quality tests (nothing to download).

- ``text``: sentences with topic clusters, analogy families and graded word pairs;
- ``sessions``: a clickstream with item groups, sequences and shown-but-not-clicked lists;
- ``graph``: edge lists with planted communities (a degree-corrected SBM) or structural roles.

``nsdist.synth`` exposes the text generator as before (``generate``, ``truth_paths``, ...);
the sessions and graph generators are in their modules.
"""

from .text import FILLER_WORDS, SynthFiles, SynthSpec, generate, generate_sentences, truth_paths, vocabulary

__all__ = ["FILLER_WORDS", "SynthFiles", "SynthSpec", "generate", "generate_sentences", "truth_paths", "vocabulary"]
