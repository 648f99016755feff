"""Old home of the student model, kept so that what was written before the move keeps working.

The model moved to :mod:`rosearch.student` (``configuration`` + ``modeling``). Exports written
before the move carry a model card that says
``from rosearch.search_space.model import register_auto_classes``; this alias keeps that line
(and other code written against the old path) working. New code imports :mod:`rosearch.student`.
No saved file records this module path: ``config.json`` names only the class
(``architectures``), and students are saved as safetensors, never pickled.
"""

from rosearch.student.configuration import POOLING_MODES, StudentConfig, StudentConfigError
from rosearch.student.modeling import (
    StudentCell,
    StudentEmbeddings,
    StudentForSequenceClassification,
    StudentModel,
    StudentPreTrainedModel,
    init_embedding_from_teacher,
    register_auto_classes,
)

__all__ = [
    "POOLING_MODES", "StudentCell", "StudentConfig", "StudentConfigError", "StudentEmbeddings",
    "StudentForSequenceClassification", "StudentModel", "StudentPreTrainedModel", "init_embedding_from_teacher",
    "register_auto_classes",
]
