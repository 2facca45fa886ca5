"""nbval runs these notebooks in kernels that inherit this process's environment:
`import workbench` puts the deterministic kernel and thread settings
(workbench.reproducibility) there first, as `workbench run` does for its kernels."""

import workbench  # noqa: F401  (pins the deterministic settings)
