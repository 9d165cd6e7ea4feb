"""The ``gradmix`` command."""
