"""Adapters that put compressed tables inside other libraries' models.

Each adapter is a leaf module that imports its library lazily, so ``import skdirection``
never imports it: use ``from skdirection.adapters import transformers``.
"""
