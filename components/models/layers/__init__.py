"""Reusable building blocks of the model zoo: MLP, cross layers, CIN, attention, interactions."""
