"""Torsos, heads and the actor/critic modules that combine them."""
