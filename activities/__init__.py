"""Every side effect of a run: agent calls and platform pushes."""
