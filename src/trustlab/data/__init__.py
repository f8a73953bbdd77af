"""Offline dataset registry: ``trustlab.data.load(name, **options)``; see ``trustlab data list``."""

from .registry import REGISTRY, canonical, is_installed, listing, load
from .splits import stratified_split
from .types import ImageData, PromptSet, TableData, TextCorpus

__all__ = ["REGISTRY", "ImageData", "PromptSet", "TableData", "TextCorpus", "canonical", "is_installed", "listing",
           "load", "stratified_split"]
