"""Test support shared by tests/, bench/, soak/ and fuzz/: echo peers, free ports, waiting.

It lives outside ``stunner/`` and imports nothing from it, so a harness that checks stunnerd
from the outside can use it without importing the code under test. The modules:

- ``ports``: ports free for UDP and/or TCP on a loopback address, and blocks of them;
- ``wait``: poll a condition until it holds or a deadline passes (sync and asyncio);
- ``echo``: a counting UDP echo peer, with optional asymmetric answers (another size, some
  datagrams answered twice) and unsolicited sends, run on the caller's event loop, in a thread
  or in a child process.
"""
