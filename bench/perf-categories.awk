# Buckets `perf script -F comm,tid,ip,sym` samples (with call graphs) of the relay into the
# parts of its work: the first rule (in order) that matches any frame of a sample wins.
# Usage: perf script -i perf.data -F comm,tid,ip,sym | awk -f bench/perf-categories.awk
function category(stack) {
    if (stack ~ /noise::respond|HandshakeState|noise::ClientHandshake/) return "Noise handshake (X25519, BLAKE2s)"
    if (stack ~ /tidings_protocol::noise|snow::/) return "Noise records (ChaCha20-Poly1305 seal/open)"
    if (stack ~ /DeliveryKey::for_relay/) return "queue creation (X25519 for the delivery key)"
    if (stack ~ /reencrypt/) return "re-encryption (ChaCha20-Poly1305)"
    if (stack ~ /AuthPublicKey::from_bytes/) return "storage: key decode on queue read (Ed25519 point decompression)"
    if (stack ~ /ed25519|verify_strict|Request::verify/) return "signatures (Ed25519 verify)"
    if (stack ~ /sync_file_range|fdatasync|fsync|pwrite|jbd2|ext4_|blk_/) return "storage: log writes and fsync (kernel)"
    if (stack ~ /sled::|tidings_relay::store/) return "storage: sled trees, batches, wake-ups"
    if (stack ~ /rustls::|ring::ec|ring_core_0_[0-9_]+__x25519|rcgen/) return "QUIC TLS handshake"
    if (stack ~ /udp_sendmsg|udp_recvmsg|__sys_sendmsg|__sys_recvmsg|sendmmsg|recvmmsg|quinn_udp/) return "UDP send/receive (kernel)"
    if (stack ~ /quinn|aes_gcm|ring_core/) return "QUIC (packets, AES-GCM, streams)"
    if (stack ~ /block::decode_frames|BlockBuilder|Reply::encode|Request::decode|tidings_relay::dispatch|tidings_relay::session/) return "frames and dispatch"
    if (stack ~ /futex|schedule|tokio::runtime|epoll|parking_lot|tokio::sync/) return "thread wake-ups and scheduling"
    if (stack ~ /malloc|free|memmove|memcpy|_int_|realloc/) return "allocation and copies"
    return "other"
}
/^[^ \t]/ { in_sample = 1; stack = ""; next }
/^[ \t]+[0-9a-f]+ / { stack = stack " " $0; next }
/^$/ { if (in_sample && stack != "") { n[category(stack)]++; total++ } in_sample = 0; stack = ""; next }
END {
    if (in_sample && stack != "") { n[category(stack)]++; total++ }
    for (c in n) printf "%6.1f%%  %6d  %s\n", 100 * n[c] / total, n[c], c | "sort -rn"
    close("sort -rn")
    printf "%6.1f%%  %6d  samples\n", 100, total
}
