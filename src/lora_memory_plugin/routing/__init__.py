"""Module routing: which consolidated LoRA modules answer a question (keys index + router)."""

from .index import KeyHit, RoutingIndex
from .router import RouteDecision, RoutedModule, route

__all__ = ["KeyHit", "RouteDecision", "RoutedModule", "RoutingIndex", "route"]
