"""Caption keywords: preprocessing, TF-IDF, chi-square, PMI, the mapping table, the keyword
HMM and a caption-to-categories classifier.

Public entry points:
  analyze_text(text, mapping=None, model=None) -> TextAnalysis   one sentence (used by search)
  fit_keyword_model(caption_set, mapping) -> KeywordModel         the model analyze_text uses
  run_pipeline(caption_set, mapping, config) -> KeywordReport    a whole caption file, measured
  report_on_file(path_or_bytes, mapping, config) -> (captions, report)   read, then run_pipeline
  Mapping.load(path=None)                                       the category mapping table
"""

from core.text.analyze import TextAnalysis, analyze_text
from core.text.categories import Mapping, MappingError
from core.text.model import KeywordModel, fit_keyword_model
from core.text.pipeline import KeywordReport, PipelineConfig, report_on_file, run_pipeline
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
    "fit_keyword_model",
    "report_on_file",
    "run_pipeline",
]
