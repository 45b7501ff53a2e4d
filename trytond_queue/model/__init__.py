"""The model layer: Model, ModelSQL and their fields."""
from . import fields
from .model import Model, ModelMeta, dualmethod
from .modelsql import ModelSQL

__all__ = ['Model', 'ModelMeta', 'ModelSQL', 'dualmethod', 'fields']
