"""Effect removal: estimate the effects a stem went through, as an editable chain, and undo them."""
