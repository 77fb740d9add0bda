"""The autograd engine: variables, function nodes, saved-array hooks and backprop."""
