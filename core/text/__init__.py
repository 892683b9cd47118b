"""Caption keywords: preprocessing, TF-IDF, chi-square, PMI, the mapping table, the keyword
HMM and a caption-to-categories classifier.

Public entry points:
  analyze_text(text, mapping=None, model=None) -> TextAnalysis   one sentence (used by search)
  run_pipeline(caption_set, mapping, config) -> KeywordReport    a whole caption file
  Mapping.load(path=None)                                       the category mapping table
"""

from core.text.analyze import TextAnalysis, analyze_text
from core.text.mapping import Mapping, MappingError
from core.text.pipeline import KeywordModel, KeywordReport, PipelineConfig, run_pipeline
from core.text.preprocess import Preprocessor

__all__ = [
    "KeywordModel",
    "KeywordReport",
    "Mapping",
    "MappingError",
    "PipelineConfig",
    "Preprocessor",
    "TextAnalysis",
    "analyze_text",
    "run_pipeline",
]
