# Buckets `perf script -F comm,tid,ip,sym` samples (with call graphs) of the relay into the
# parts of its work: the first rule (in order) that matches any frame of a sample wins.
# Usage: perf script -i perf.data -F comm,tid,ip,sym | awk -f bench/perf-categories.awk
function category(stack, leaf) {
    if (stack ~ /noise::respond|HandshakeState|noise::ClientHandshake/) return "Noise handshake (X25519, BLAKE2s)"
    if (stack ~ /tidings_protocol::noise|snow::/) return "Noise records (ChaCha20-Poly1305 seal/open)"
    if (stack ~ /DeliveryKey::for_relay/) return "queue creation (X25519 for the delivery key)"
    if (stack ~ /reencrypt/) return "re-encryption (ChaCha20-Poly1305)"
    if (stack ~ /AuthPublicKey::from_bytes/) return "storage: key decode on queue read (Ed25519 point decompression)"
    if (stack ~ /ed25519|verify_strict|Request::verify/) return "signatures (Ed25519 verify)"
    if (stack ~ /sync_file_range|fdatasync|fsync|pwrite|jbd2|ext4_|blk_/) return "storage: log writes and fsync (kernel)"
    # Only frames *of* the store: the session's and dispatcher's frames name the store too,
    # as a type parameter (`{async_fn#0}<tidings_relay::store::SledStore>`).
    if (stack ~ /[0-9a-f]+ <?(sled::|tidings_relay::store::)/) return "storage: sled, the message log's reads and the writer thread"
    if (stack ~ /rustls::|ring::ec|ring_core_0_[0-9_]+__x25519|rcgen/) return "QUIC TLS handshake"
    # Copies, allocation and zeroing by where the CPU was (the leaf frame), wherever called.
    if (leaf ~ /malloc|free|memmove|memcpy|memset|_int_|realloc|_rjem_|zeroize|volatile_write|write_volatile/) return "allocation, copies and zeroing"
    if (stack ~ /udp_sendmsg|udp_recvmsg|__sys_sendmsg|__sys_recvmsg|sendmmsg|recvmmsg|quinn_udp/) return "UDP send/receive (kernel)"
    # Frames of quinn, h3 and ring only: other frames name quinn in their type parameters.
    if (stack ~ /[0-9a-f]+ <?(quinn|h3|aes_gcm|ring_core|ring::)/) return "QUIC and HTTP/3 (packets, AES-GCM, streams)"
    if (stack ~ /block::decode_frames|BlockBuilder|Reply::encode|Request::decode|tidings_relay::dispatch|tidings_relay::session/) return "frames and dispatch"
    if (stack ~ /futex|schedule|tokio::runtime|epoll|parking_lot|tokio::sync/) return "thread wake-ups and scheduling"
    return "other"
}
/^[^ \t]/ { in_sample = 1; stack = ""; leaf = ""; next }
/^[ \t]+[0-9a-f]+ / { if (stack == "") leaf = $0; stack = stack " " $0; next }
/^$/ { if (in_sample && stack != "") { n[category(stack, leaf)]++; total++ } in_sample = 0; stack = ""; next }
END {
    if (in_sample && stack != "") { n[category(stack, leaf)]++; total++ }
    for (c in n) printf "%6.1f%%  %6d  %s\n", 100 * n[c] / total, n[c], c | "sort -rn"
    close("sort -rn")
    printf "%6.1f%%  %6d  samples\n", 100, total
}
