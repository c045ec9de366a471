"""ONC RPC (RFC 5531): XDR, messages, auth, record marking, dispatch, DRC, transports, client."""
