"""The compiled inference loops: `fused_scan` (what they compute, the Python-facing calls), `loader`
(how `fused_scan.c` is built, verified and loaded; why cffi), `fused_scan.h` (their prototypes, read by
the compiler and by cffi); `python -m dqn2snn_plugin._native` builds them ahead of time and reports how."""
