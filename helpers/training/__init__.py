"""Above the kernels: the runtime profiles (`profile`), run folders and loading networks (`runs`), and the
training loop with exact resume (`loop`)."""
