"""The faust app and the runners that drive connectors: the metaverse processor, and the source
and sink runners around readers and writers."""
