//! Network driver: QUIC connection to a relay, Noise session, requests and pushed replies.
//! (Being built.)
