"""OpenLDAP readers: accesslog record decoding, the RFC 4533 codec, and the accesslog-sync and
accesslog-poll readers."""
