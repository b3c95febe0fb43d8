"""Imported only by the forkserver, last in its preload list, once the heavy imports are done.

``gc.freeze()``: the objects the server created while importing torch & co. move to the
collector's permanent generation. Otherwise every collection in a stage's forked child walks
them and writes to their headers, copying hundreds of MB of shared pages (copy-on-write), which
showed as ~0.2 s added to a quickstart export.

The exit handler: when the edgepipe process that started the server exits, the server leaves
with SystemExit and Python would then tear down torch and the other preloaded libraries, about
a second in which the server still holds the parent's stdout/stderr open (a CI log or
``subprocess.run(capture_output=True)`` waits for it after edgepipe itself has finished).
Nothing in the server needs a clean shutdown (the stages run in its children, which end with
``os._exit`` anyway), so the first exit handler ends the process at once.
"""

import atexit
import gc
import os

gc.freeze()
atexit.register(os._exit, 0)  # registered last, so it runs first
