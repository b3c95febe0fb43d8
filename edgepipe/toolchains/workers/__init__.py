"""Scripts that run *inside* a toolchain's environment, not edgepipe's: standard library and the
toolchain's own packages only (edgepipe is not installed there). Each reads a request JSON and
writes a result JSON, the two paths it is given; see edgepipe.toolchains.invoke."""
