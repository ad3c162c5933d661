"""An independent implementation of PROTOCOL.md sections 2 to 10 (with the tunnel proof of 3.2) and 15 (chunks and files), written from the document
alone (not from the Rust), checked against the known-answer vectors in protocol/tests/vectors,
and the safety code of section 12.8 against client/tests/vectors/safety_code.txt.

Run: python3 -m pip install cryptography && python3 tests/spec/check_vectors.py
Exit status 0 when every value matches, 1 otherwise.
"""
import json, hashlib, hmac, struct, base64, ipaddress, re, sys, os
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes, serialization

V = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'protocol', 'tests', 'vectors') + os.sep
def load(n): return json.load(open(V + n))
ok = 0; bad = 0
def check(name, cond):
    global ok, bad
    if cond: ok += 1
    else: bad += 1; print('FAIL', name)

RECORD_LEN = 16400; BLOCK_LEN = 16384; HELLO_LEN = RECORD_LEN - 48
def raw_pub(priv): return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
def x25519(sk, pk): return X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))
def x25519_pub(sk): return raw_pub(X25519PrivateKey.from_private_bytes(sk))

# ---------- section 2: addresses ----------
def b64url_decode_strict(s):
    if not re.fullmatch(r'[A-Za-z0-9_-]*', s): raise ValueError
    b = base64.urlsafe_b64decode(s + '=' * (-len(s) % 4))
    if base64.urlsafe_b64encode(b).rstrip(b'=').decode() != s: raise ValueError  # trailing bits
    return b
def parse_port(p):
    if not re.fullmatch(r'[0-9]{1,5}', p) or int(p) == 0 or int(p) > 65535: raise ValueError('port')
    if p.startswith('0'): raise ValueError('port leading zero')
    return int(p)
def parse_host(host):
    if host.startswith('['):
        if not host.endswith(']'): raise ValueError('bracket')
        ip = ipaddress.IPv6Address(host[1:-1])
        canon = '[' + str(ip) + ']'
        if ip.ipv4_mapped: canon = '[::ffff:%s]' % ip.ipv4_mapped
        if canon != host: raise ValueError('canon')
    elif host == '': raise ValueError('empty')
    elif len(host) > 253: raise ValueError('253')
    elif re.fullmatch(r'[0-9.]+', host):
        parts = host.split('.')
        if len(parts) != 4 or any(not re.fullmatch(r'0|[1-9][0-9]{0,2}', p) or int(p) > 255 for p in parts): raise ValueError('v4')
    else:
        for label in host.split('.'):
            if not re.fullmatch(r'[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?', label): raise ValueError('label')
    return host
BINDINGS = ['h3', 'h2', 'ws']
def parse_address(s):
    """Section 2: returns (key, hosts, port, offers) with offers [(binding, port)]."""
    if len(s.encode()) > 512: raise ValueError('long')
    if not s.startswith('tidings://'): raise ValueError('scheme')
    rest = s[len('tidings://'):]
    if '@' not in rest: raise ValueError('@')
    key, rest = rest.split('@', 1)
    if len(key) != 43: raise ValueError('key len')
    k = b64url_decode_strict(key)
    via = None
    if '?' in rest:
        rest, query = rest.split('?', 1)
        if not query.startswith('via='): raise ValueError('query')
        via = query[len('via='):]
    if ':' not in rest: raise ValueError('port')
    hostlist, port = rest.rsplit(':', 1)
    port = parse_port(port)
    hosts = [parse_host(h) for h in hostlist.split(',')]
    if len(hosts) > 8: raise ValueError('hosts')
    if len(set(hosts)) != len(hosts): raise ValueError('duplicate host')
    if via is None:
        offers = [(b, port) for b in BINDINGS]
    else:
        offers = []
        for item in via.split(','):
            name, _, p = item.partition(':')
            if name not in BINDINGS: raise ValueError('binding')
            if _ and parse_port(p) == port: raise ValueError('binding port restates the address port')
            if offers and BINDINGS.index(offers[-1][0]) >= BINDINGS.index(name): raise ValueError('order')
            offers.append((name, parse_port(p) if _ else port))
        if offers == [(b, port) for b in BINDINGS]: raise ValueError('via restates the default')
    return k, hosts, port, offers
def print_address(k, hosts, port, offers):
    s = 'tidings://' + base64.urlsafe_b64encode(k).rstrip(b'=').decode() + '@' + ','.join(hosts) + ':%d' % port
    if offers != [(b, port) for b in BINDINGS]:
        s += '?via=' + ','.join(b if p == port else '%s:%d' % (b, p) for b, p in offers)
    return s
a = load('addresses.json')
for v in a['valid']:
    k, hosts, port, offers = parse_address(v['text'])
    check('addr valid ' + v['text'], k.hex() == v['key_hex'] and port == v['port'] and hosts[0] == v['host']
          and hosts == v['hosts'] and ['%s:%d' % o for o in offers] == v['offers'])
    check('addr prints back ' + v['text'], print_address(k, hosts, port, offers) == v['text'])
for v in a['invalid']:
    try: parse_address(v['text']); check('addr invalid ' + v['name'], False)
    except ValueError: check('addr invalid', True)

# ---------- section 5.2: blocks ----------
def block(frames):
    out = bytes([len(frames)]) + b''.join(struct.pack('>H', len(f)) + f for f in frames)
    assert len(out) <= BLOCK_LEN
    return out + bytes(BLOCK_LEN - len(out))
def decode_block(b):
    assert len(b) == BLOCK_LEN
    n = b[0]; i = 1; fr = []
    for _ in range(n):
        L = struct.unpack('>H', b[i:i+2])[0]; i += 2
        assert 1 <= L <= 16381 and i + L <= len(b)
        fr.append(b[i:i+L]); i += L
    assert all(x == 0 for x in b[i:])
    return fr
for c in load('blocks.json')['cases']:
    fr = [bytes.fromhex(x) for x in c['frames_hex']]
    blk = block(fr)
    check('block ' + c['name'], blk.rstrip(b'\0') == bytes.fromhex(c['unpadded_hex']).rstrip(b'\0') and decode_block(blk) == fr)

# ---------- sections 6-7: frames and signatures ----------
CTX = b'tidings command signature v1\0'
def cmd_len(b):
    t = b[0]
    fixed = {0x01: 65, 0x02: 1, 0x03: 25, 0x04: 1, 0x05: 1, 0x06: 1, 0x10: 33, 0x20: 1}
    if t in fixed: return fixed[t]
    if t == 0x11: return 3 + struct.unpack('>H', b[1:3])[0]
    raise ValueError('tag')
def decode_request(f):
    corr, ent, flag = f[:8], f[8:32], f[32]
    if flag == 0: sig, cmd = None, f[33:]
    elif flag == 1: sig, cmd = f[33:97], f[97:]
    else: raise ValueError
    if cmd_len(cmd) != len(cmd): raise ValueError('trailing')
    return corr, ent, sig, cmd
s = load('signatures.json')
binding = bytes.fromhex(s['binding_hex'])
check('ctx', CTX.hex() == s['context_hex'])
for c in s['cases']:
    sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(c['signer_seed_hex']))
    pk = raw_pub(sk)
    corr, ent, cmd = (bytes.fromhex(c[k]) for k in ('corr_hex', 'entity_hex', 'command_hex'))
    signed = CTX + binding + corr + ent + cmd
    sig = sk.sign(signed)
    frame = corr + ent + b'\x01' + sig + cmd
    check('sig ' + c['name'], pk.hex() == c['signer_public_hex'] and signed.hex() == c['signed_bytes_hex']
          and sig.hex() == c['signature_hex'] and frame.hex() == c['frame_hex'])
cm = load('commands.json')
b2 = bytes.fromhex(cm['binding_hex'])
keys = {bytes.fromhex(cm['recipient_auth_public_hex']), bytes.fromhex(cm['sender_auth_public_hex'])}
for r in cm['requests']:
    f = bytes.fromhex(r['frame_hex'])
    corr, ent, sig, cmd = decode_request(f)
    if sig is not None:
        verified = False
        for k in keys | ({cmd[1:33]} if cmd[0] in (0x01, 0x10) else set()):
            try: Ed25519PublicKey.from_public_bytes(k).verify(sig, CTX + b2 + corr + ent + cmd); verified = True
            except Exception: pass
        check('req sig ' + r['name'], verified)
    # signer rule (8.2)
    rule = {0x01: 'carried', 0x10: 'carried', 0x20: 'nobody', 0x11: 'sender'}.get(cmd[0], 'recipient')
    check('req shape ' + r['name'], (rule != 'nobody' or (sig is None and ent == bytes(24))) and (cmd[0] != 0x01 or ent == bytes(24)))
    # section 9.2 (version 2): the subscriber's session ack is an Ack without a signature
    if r['name'] == 'ack_by_session':
        check('session ack', sig is None and cmd[0] == 0x03 and len(cmd) == 25 and ent != bytes(24))
check('session ack present', any(r['name'] == 'ack_by_session' for r in cm['requests']))
def reply_len(b):
    t = b[0]
    fixed = {0x81: 81, 0x82: 1, 0x84: 1, 0x85: 1, 0x86: 2}
    if t in fixed: return fixed[t]
    if t == 0x83: return 1 + 24 + 2 + struct.unpack('>H', b[25:27])[0]
    raise ValueError
names = {'ids': 0x81, 'ok': 0x82, 'message_pushed': 0x83, 'end': 0x84, 'pong': 0x85}
codes = ['block', 'command', 'auth', 'quota', 'no_message', 'large', 'busy', 'internal']
for r in cm['replies']:
    f = bytes.fromhex(r['frame_hex']); body = f[32:]
    good = reply_len(body) == len(body)
    if r['name'] in names: good &= body[0] == names[r['name']]
    if r['name'].startswith('error_'): good &= body[0] == 0x86 and body[1] == codes.index(r['name'][6:]) + 1
    if r['name'] in ('message_pushed', 'end'): good &= f[:8] == bytes(8)
    check('reply ' + r['name'], good)

# ---------- section 6.3: Ed25519 public keys in New and Secure ----------
P25519 = 2**255 - 19
ED_D = (-121665 * pow(121666, P25519 - 2, P25519)) % P25519
def ed_add(a, b):
    (x1, y1), (x2, y2) = a, b
    t = ED_D * x1 * x2 * y1 * y2 % P25519
    return ((x1 * y2 + x2 * y1) * pow(1 + t, P25519 - 2, P25519) % P25519,
            (y1 * y2 + x1 * x2) * pow(1 - t, P25519 - 2, P25519) % P25519)
def ed25519_key_check(b):
    """The checks of section 6.3 in their order; returns the first that fails, or 'valid'."""
    v = int.from_bytes(b, 'little'); sign = v >> 255; y = v & ((1 << 255) - 1)
    if y >= P25519: return 'non-canonical'
    u, w = (y * y - 1) % P25519, (ED_D * y * y + 1) % P25519
    x2 = u * pow(w, P25519 - 2, P25519) % P25519
    x = pow(x2, (P25519 + 3) // 8, P25519)
    if x * x % P25519 != x2: x = x * pow(2, (P25519 - 1) // 4, P25519) % P25519
    if x * x % P25519 != x2: return 'off-curve'
    if (x & 1) != sign: x = (P25519 - x) % P25519
    q = (x, y)
    for _ in range(3): q = ed_add(q, q)
    return 'small-order' if q == (0, 1) else 'valid'
for c in load('keys.json')['ed25519_public_keys']:
    why = ed25519_key_check(bytes.fromhex(c['key_hex']))
    check('ed25519 key ' + c['name'], why == c['why'] and c['valid'] == (why == 'valid'))

# ---------- section 10: re-encryption ----------
def hchacha20(key, nonce16):
    def rotl(v, c): return ((v << c) & 0xffffffff) | (v >> (32 - c))
    def qr(s, a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xffffffff; s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xffffffff; s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xffffffff; s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xffffffff; s[b] = rotl(s[b] ^ s[c], 7)
    st = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] + list(struct.unpack('<8I', key)) + list(struct.unpack('<4I', nonce16))
    for _ in range(10):
        qr(st, 0, 4, 8, 12); qr(st, 1, 5, 9, 13); qr(st, 2, 6, 10, 14); qr(st, 3, 7, 11, 15)
        qr(st, 0, 5, 10, 15); qr(st, 1, 6, 11, 12); qr(st, 2, 7, 8, 13); qr(st, 3, 4, 9, 14)
    return struct.pack('<8I', *(st[0:4] + st[12:16]))
def xchacha_seal(key, nonce24, aad, pt):
    return ChaCha20Poly1305(hchacha20(key, nonce24[:16])).encrypt(b'\0' * 4 + nonce24[16:], pt, aad)
def hkdf(ikm, info, L=32): return HKDF(hashes.SHA256(), L, None, info).derive(ikm)
r = load('reencrypt.json')
rs, ls_ = bytes.fromhex(r['recipient_secret_hex']), bytes.fromhex(r['relay_secret_hex'])
rp, lp = x25519_pub(rs), x25519_pub(ls_)
shared = x25519(ls_, rp)
check('reenc shared', shared == x25519(rs, lp) and shared.hex() == r['shared_secret_hex'] and rp.hex() == r['recipient_public_hex'] and lp.hex() == r['relay_public_hex'])
key = hkdf(shared, b'tidings relay delivery key v1' + rp + lp)
check('reenc key', key.hex() == r['delivery_key_hex'] and r['info_hex'] == b'tidings relay delivery key v1'.hex())
for c in r['cases']:
    check('reenc ' + c['name'], xchacha_seal(key, bytes.fromhex(c['message_id_hex']), b'', bytes.fromhex(c['body_hex'])).hex() == c['sealed_hex'])


# ---------- section 15: file chunks (chunks.json) ----------
ch = load('chunks.json')
PIECE = ch['piece_len']
SIZES = [65536, 262144, 1048576, 4194304]
check('chunk sizes', ch['chunk_sizes'] == SIZES and PIECE == 16000)
def chunk_offset(o):
    if o % PIECE or o >= SIZES[-1]: raise ValueError('offset')
    return o
def chunk_cmd(c):
    """Decodes one chunk command (15.2) exactly; returns (name, fields)."""
    t = c[0]
    if t == 0x30:
        size, sender, n = c[1], c[2:34], c[34]
        if size > 3 or not 1 <= n <= 128 or len(c) != 35 + 64 * n: raise ValueError('chunk_new')
        return 'chunk_new', (SIZES[size], sender, [(c[35 + 64 * i:67 + 64 * i], c[67 + 64 * i:99 + 64 * i]) for i in range(n)])
    if t == 0x31:
        off = chunk_offset(struct.unpack('>I', c[1:5])[0]); ln = struct.unpack('>H', c[5:7])[0]
        if not 1 <= ln <= PIECE or len(c) != 7 + ln: raise ValueError('chunk_put')
        return 'chunk_put', (off, c[7:])
    if t in (0x32, 0x33, 0x35):
        if len(c) != 1: raise ValueError('trailing')
        return {0x32: 'chunk_status', 0x33: 'chunk_delete', 0x35: 'chunk_ack'}[t], ()
    if t == 0x34:
        if len(c) != 5: raise ValueError('chunk_get')
        return 'chunk_get', (chunk_offset(struct.unpack('>I', c[1:5])[0]),)
    raise ValueError('tag')
cb = bytes.fromhex(ch['binding_hex'])
signers = {'sender': Ed25519PrivateKey.from_private_bytes(bytes.fromhex(ch['sender_auth_seed_hex'])),
           'recipient0': Ed25519PrivateKey.from_private_bytes(bytes.fromhex(ch['recipient_auth_seeds_hex'][0]))}
signed_chunk = {}
for r in ch['requests']:
    f = bytes.fromhex(r['frame_hex'])
    corr, ent, flag = f[:8], f[8:32], f[32]
    if r['signer'] == 'none':
        # Section 15.11 (version 3): a piece command sent unsigned on a session that opened
        # its chunk id; the same command and entity as the signed vector, with sig_flag 0.
        cmd = f[33:]
        name, fields = chunk_cmd(cmd)
        base = r['name'].removesuffix('_by_session')
        good = flag == 0 and name == base and name in ('chunk_put', 'chunk_get')
        good &= base in signed_chunk and signed_chunk[base] == (ent, cmd)
        check('chunk req ' + r['name'], good)
        continue
    sig, cmd = f[33:97], f[97:]
    name, fields = chunk_cmd(cmd)
    signed_chunk[name] = (ent, cmd)
    good = flag == 1 and name == r['name']
    pk = raw_pub(signers[r['signer']])
    try: Ed25519PublicKey.from_public_bytes(pk).verify(sig, CTX + cb + corr + ent + cmd)
    except Exception: good = False
    if name == 'chunk_new':
        # Entity all zero, signed by the carried sender key (8.2 CarriedKey).
        good &= ent == bytes(24) and fields[1] == pk
        good &= [a for a, _ in fields[2]] == [raw_pub(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(s))) for s in ch['recipient_auth_seeds_hex']]
    if name == 'chunk_put':
        # The last piece of a 64 KiB chunk is 65536 - 4 * 16000 bytes of i mod 251.
        good &= fields[0] == 4 * PIECE and fields[1] == bytes(i % 251 for i in range(65536 - 4 * PIECE))
    check('chunk req ' + r['name'], good)
check('session pieces present', {'chunk_put_by_session', 'chunk_get_by_session'} <= {r['name'] for r in ch['requests']})
def chunk_reply(b):
    t = b[0]
    if t == 0x87:
        n = b[25]
        if not 1 <= n <= 128 or len(b) != 26 + 56 * n: raise ValueError
        return 'chunk_ids', (b[1:25], [(b[26 + 56 * i:50 + 56 * i], b[50 + 56 * i:82 + 56 * i]) for i in range(n)])
    if t == 0x88:
        v = struct.unpack('>I', b[1:5])[0]
        if len(b) != 5 or v > SIZES[-1]: raise ValueError
        return 'chunk_received', (v,)
    if t == 0x89:
        off = chunk_offset(struct.unpack('>I', b[1:5])[0]); ln = struct.unpack('>H', b[29:31])[0]
        if ln > PIECE + 16 or len(b) != 31 + ln: raise ValueError
        return 'chunk_data', (off, b[5:29], b[31:])
    raise ValueError
replies = {}
for r in ch['replies']:
    f = bytes.fromhex(r['frame_hex'])
    name, fields = chunk_reply(f[32:])
    replies[name] = fields
    check('chunk reply ' + r['name'], name == r['name'])
keys = []
for i, k in enumerate(ch['keys']):
    rs, ls_ = bytes.fromhex(k['recipient_secret_hex']), bytes.fromhex(k['relay_secret_hex'])
    rp, lp = x25519_pub(rs), x25519_pub(ls_)
    key = hkdf(x25519(ls_, rp), bytes.fromhex(ch['chunk_key_info_hex']) + rp + lp)
    keys.append(key)
    check('chunk key %d' % i, key.hex() == k['chunk_key_hex'] and rp.hex() == k['recipient_public_hex']
          and lp.hex() == k['relay_public_hex'] and ch['chunk_key_info_hex'] == b'tidings relay chunk key v1'.hex()
          and replies['chunk_ids'][1][i][1] == lp)
for c in ch['pieces']:
    piece = bytes.fromhex(c['piece_hex'])
    sealed = xchacha_seal(keys[0], bytes.fromhex(c['nonce_hex']), struct.pack('>I', c['offset']), piece)
    check('chunk piece ' + c['name'], sealed.hex() == c['sealed_hex'] and piece == bytes(i % 251 for i in range(len(piece))))
off, nonce, sealed = replies['chunk_data']
check('chunk data reply', sealed == xchacha_seal(keys[0], nonce, struct.pack('>I', off), bytes(i % 251 for i in range(PIECE))))


# ---------- sections 15.7-15.8: file encryption and description (files.json) ----------
fv = load('files.json')
fkey, fprefix = bytes.fromhex(fv['key_hex']), bytes.fromhex(fv['prefix_hex'])
flen = fv['plaintext_len']
fplain = bytes(i % 251 for i in range(flen))
faad = b'tidings file v1' + struct.pack('>Q', flen)
check('file aad', faad.hex() == fv['aad_hex'])
nseg = max(1, -(-flen // 65520))
check('file segments', len(fv['segments']) == nseg)
for seg in fv['segments']:
    i = seg['index']; last = i == nseg - 1
    nonce = fprefix + struct.pack('>I', i) + bytes([1 if last else 0])
    pt = fplain[i * 65520:(i + 1) * 65520].ljust(65520, b'\0')
    ct = xchacha_seal(fkey, nonce, faad, pt)
    check('file segment %d' % i, len(ct) == 65536 and nonce.hex() == seg['nonce_hex'] and seg['last'] == last
          and hashlib.sha256(ct).hexdigest() == seg['sha256_of_sealed_hex']
          and ct[:32].hex() == seg['sealed_head_hex'] and ct[-32:].hex() == seg['sealed_tail_hex'])
check('file digest', hashlib.sha256(fplain).hexdigest() == fv['plaintext_sha256_hex'])
seed = bytes.fromhex(fv['seed_hex'])
check('chunk seed info', fv['chunk_seed_info_hex'] == b'tidings chunk recipient keys v1'.hex())
def chunk_keys(seed, index):
    okm = hkdf(seed, b'tidings chunk recipient keys v1' + struct.pack('>I', index), 64)
    return raw_pub(Ed25519PrivateKey.from_private_bytes(okm[:32])), x25519_pub(okm[32:])
a0, d0 = chunk_keys(seed, 0); a1, _ = chunk_keys(seed, 1)
check('chunk keys from seed', a0.hex() == fv['chunk0_auth_public_hex'] and d0.hex() == fv['chunk0_dh_public_hex'] and a1.hex() == fv['chunk1_auth_public_hex'])
def decode_description(b):
    """PROTOCOL.md 15.8, strictly: version 1 (one relay) and version 2 (1..=8 relays, a
    relay index per chunk)."""
    if len(b) > 8000: raise ValueError('over 8,000 bytes')
    v = b[0]
    if v not in (1, 2) or b[1] & ~3: raise ValueError('version/flags')
    voice = bool(b[1] & 1); chained = bool(b[1] & 2); size, dur = struct.unpack('>QI', b[2:14]); at = 14
    if size > 4 << 30: raise ValueError('size over 4 GiB')
    nl = b[at]; name = b[at + 1:at + 1 + nl].decode(); at += 1 + nl
    ml = b[at]; media = b[at + 1:at + 1 + ml].decode('ascii'); at += 1 + ml
    if not (1 <= nl <= 255 and 1 <= ml <= 127): raise ValueError('lengths')
    digest, key, prefix, sd = b[at:at + 32], b[at + 32:at + 64], b[at + 64:at + 83], b[at + 83:at + 115]; at += 115
    if v == 1:
        r = 1
    else:
        r = b[at]; at += 1
        if not 1 <= r <= 8: raise ValueError('relay count')
    relays = []
    for _ in range(r):
        rl = struct.unpack('>H', b[at:at + 2])[0]
        if rl > 512: raise ValueError('relay address length')
        relays.append(b[at + 2:at + 2 + rl].decode()); at += 2 + rl
    keys = [parse_address(a)[0] for a in relays]
    if len(set(keys)) != len(keys): raise ValueError('two relays with one key')
    n = struct.unpack('>H', b[at:at + 2])[0]; at += 2
    e = 57 if v == 1 else 58
    chunks = []
    for i in range(n):
        c = b[at + e * i:at + e * (i + 1)]
        if len(c) != e: raise ValueError('truncated')
        ri, c = (0, c) if v == 1 else (c[0], c[1:])
        if ri >= r: raise ValueError('relay index out of range')
        chunks.append((ri, c[0], c[1:25], c[25:57]))
    at += e * n
    list_len = None
    if chained:
        list_len = struct.unpack('>I', b[at:at + 4])[0]; at += 4
        if not 1 <= list_len <= 5 + e * 1100: raise ValueError('chunk list length')
    if at != len(b) or not 1 <= n <= 120: raise ValueError('trailing or count')
    listed = list_len if chained else size
    if sum(SIZES[c[1]] for c in chunks) != max(1, -(-listed // 65520)) * 65536: raise ValueError('chunk sizes')
    if not voice and dur: raise ValueError('duration')
    return dict(version=v, voice=voice, size=size, duration=dur, name=name, media=media, digest=digest, key=key, prefix=prefix, seed=sd, relays=relays, relay=relays[0], chunks=chunks, list_len=list_len)
def decode_chunk_list(b, relays=1):
    """PROTOCOL.md 15.9, strictly: version 1 (57-byte entries) or 2 (58, a relay index first,
    below the description's relay count)."""
    if len(b) < 5 or b[0] not in (1, 2): raise ValueError('chunk list version/length')
    e = 57 if b[0] == 1 else 58
    if len(b) > 5 + e * 1100: raise ValueError('chunk list length')
    m = struct.unpack('>I', b[1:5])[0]
    if not 1 <= m <= 1100 or len(b) != 5 + e * m: raise ValueError('chunk list count')
    out = []
    for i in range(m):
        c = b[5 + e * i:5 + e * (i + 1)]
        ri, c = (0, c) if e == 57 else (c[0], c[1:])
        if ri >= (1 if e == 57 else relays): raise ValueError('relay index out of range')
        out.append((ri, c[0], c[1:25], c[25:57]))
    return out
d = decode_description(bytes.fromhex(fv['description_hex']))
check('file description', d['voice'] and d['size'] == flen and d['duration'] == 42 and d['name'] == 'sermon-03.mp3'
      and d['media'] == 'audio/mpeg' and d['digest'].hex() == fv['plaintext_sha256_hex'] and d['key'] == fkey
      and d['prefix'] == fprefix and d['seed'] == seed and parse_address(d['relay']) is not None and len(d['chunks']) == 2
      and d['list_len'] is None)
# 15.9: the chained description of the same file, its chunk list, the list's encryption.
cd = decode_description(bytes.fromhex(fv['chained_description_hex']))
clist = bytes.fromhex(fv['chunk_list_hex'])
check('chunk list info', fv['chunk_list_info_hex'] == b'tidings chunk list v1'.hex())
lokm = hkdf(seed, b'tidings chunk list v1', 51)
lkey, lprefix = lokm[:32], lokm[32:]
laad = b'tidings file v1' + struct.pack('>Q', len(clist))
lct = xchacha_seal(lkey, lprefix + struct.pack('>I', 0) + b'\x01', laad, clist.ljust(65520, b'\0'))
check('chunk list keys and encryption', lkey.hex() == fv['list_key_hex'] and lprefix.hex() == fv['list_prefix_hex']
      and laad.hex() == fv['list_aad_hex'] and hashlib.sha256(lct).hexdigest() == fv['list_segment_sha256_hex'])
la0, ld0 = chunk_keys(seed, 0x80000000)
check('chunk list chunk keys', la0.hex() == fv['list_chunk0_auth_public_hex'] and ld0.hex() == fv['list_chunk0_dh_public_hex'])
listed = decode_chunk_list(clist)
check('chained description', cd['list_len'] == len(clist) and len(cd['chunks']) == 1 and cd['size'] == flen
      and cd['key'] == fkey and cd['digest'] == d['digest'] and cd['name'] == d['name'] and listed == d['chunks']
      and sum(SIZES[c[1]] for c in listed) == max(1, -(-cd['size'] // 65520)) * 65536)
for wrong in (clist + b'\0', clist[:1] + struct.pack('>I', 3) + clist[5:], b'\x02' + clist[1:], b'\x01\0\0\0\0'):
    try:
        decode_chunk_list(wrong); check('chunk list refused', False)
    except (ValueError, IndexError, struct.error):
        pass

# 15.8-15.9 version 2: the same file with its chunks on two relays, its list, its chained form.
d2 = decode_description(bytes.fromhex(fv['description_v2_hex']))
check('file description v2', d2['version'] == 2 and len(d2['relays']) == 2 and d2['relays'][0] == d['relay']
      and [c[0] for c in d2['chunks']] == [1, 0] and [c[1:] for c in d2['chunks']] == [c[1:] for c in d['chunks']]
      and d2['key'] == fkey and d2['digest'] == d['digest'] and d2['seed'] == seed and d2['list_len'] is None)
clist2 = bytes.fromhex(fv['chunk_list_v2_hex'])
listed2 = decode_chunk_list(clist2, 2)
laad2 = b'tidings file v1' + struct.pack('>Q', len(clist2))
lct2 = xchacha_seal(lkey, lprefix + struct.pack('>I', 0) + b'\x01', laad2, clist2.ljust(65520, b'\0'))
check('chunk list v2 encryption', laad2.hex() == fv['list_v2_aad_hex'] and hashlib.sha256(lct2).hexdigest() == fv['list_v2_segment_sha256_hex'])
cd2 = decode_description(bytes.fromhex(fv['chained_description_v2_hex']))
check('chained description v2', cd2['version'] == 2 and cd2['list_len'] == len(clist2) and len(cd2['chunks']) == 1
      and cd2['chunks'][0][0] == 1 and cd2['relays'] == d2['relays'] and listed2 == d2['chunks'])
for wrong_list, relays in ((clist2, 1), (clist2 + b'\0', 2), (b'\x03' + clist2[1:], 2), (b'\x01' + clist2[1:], 2)):
    try:
        decode_chunk_list(wrong_list, relays); check('chunk list v2 refused', False)
    except (ValueError, IndexError, struct.error):
        pass
d2b = bytearray(bytes.fromhex(fv['description_v2_hex']))
for mutate in ('index', 'count0', 'count9', 'version3'):
    w = bytearray(d2b)
    if mutate == 'index': w[len(w) - 2 * 58] = 2
    if mutate == 'count0': w[14 + 1 + 13 + 1 + 10 + 115] = 0
    if mutate == 'count9': w[14 + 1 + 13 + 1 + 10 + 115] = 9
    if mutate == 'version3': w[0] = 3
    try:
        decode_description(bytes(w)); check('description v2 refused (%s)' % mutate, False)
    except (ValueError, IndexError, struct.error, UnicodeDecodeError):
        pass

# ---------- section 4-5: Noise NK ----------
HASHLEN = 32
def H(b): return hashlib.blake2s(b).digest()
def HMAC(k, b): return hmac.new(k, b, hashlib.blake2s).digest()
def HKDF2(ck, ikm):
    t = HMAC(ck, ikm); o1 = HMAC(t, b'\x01'); o2 = HMAC(t, o1 + b'\x02'); return o1, o2
def aead(k, n, ad, pt): return ChaCha20Poly1305(k).encrypt(b'\0' * 4 + struct.pack('<Q', n), pt, ad)
def aead_open(k, n, ad, ct): return ChaCha20Poly1305(k).decrypt(b'\0' * 4 + struct.pack('<Q', n), ct, ad)
class SS:
    def __init__(s, name, prologue):
        s.h = name.ljust(HASHLEN, b'\0') if len(name) <= HASHLEN else H(name); s.ck = s.h; s.k = None; s.n = 0
        s.mix_hash(prologue)
    def mix_hash(s, d): s.h = H(s.h + d)
    def mix_key(s, ikm): s.ck, k = s.HK(ikm); s.k = k; s.n = 0
    def HK(s, ikm): return HKDF2(s.ck, ikm)
    def enc(s, pt):
        ct = aead(s.k, s.n, s.h, pt); s.n += 1; s.mix_hash(ct); return ct
    def dec(s, ct):
        pt = aead_open(s.k, s.n, s.h, ct); s.n += 1; s.mix_hash(ct); return pt
    def split(s):
        t = HMAC(s.ck, b''); k1 = HMAC(t, b'\x01'); k2 = HMAC(t, k1 + b'\x02'); return k1, k2
hs = load('handshake.json')
name = hs['noise_params'].encode(); pro = bytes.fromhex(hs['prologue_hex'])
check('prologue', pro == b'tidings relay protocol/handshake 1' and name == b'Noise_NK_25519_ChaChaPoly_BLAKE2s')
rsk = bytes.fromhex(hs['relay_static_secret_hex']); rpk = x25519_pub(rsk)
check('relay static', rpk.hex() == hs['relay_static_public_hex'])
ce, re_ = bytes.fromhex(hs['client_ephemeral_secret_hex']), bytes.fromhex(hs['relay_ephemeral_secret_hex'])
# client writes msg1
c = SS(name, pro); c.mix_hash(rpk)
ce_pub = x25519_pub(ce); c.mix_hash(ce_pub); c.mix_key(x25519(ce, rpk))
# section 4.5: the offer and the relay's range as the vector gives them (this implementation: 1..=3)
cmin, cmax = hs['client_offer_min'], hs['client_offer_max']
smin, smax = hs['relay_supported_min'], hs['relay_supported_max']
check('versions 1..=3', (cmin, cmax, smin, smax) == (1, 3, 1, 3))
hello = struct.pack('>HH', cmin, cmax).ljust(HELLO_LEN, b'\0')
msg1 = ce_pub + c.enc(hello)
check('msg1', len(msg1) == RECORD_LEN and msg1.hex() == hs['client_hello_record_hex'])
# relay reads msg1, writes msg2
r_ = SS(name, pro); r_.mix_hash(rpk)
r_.mix_hash(msg1[:32]); r_.mix_key(x25519(rsk, msg1[:32])); p1 = r_.dec(msg1[32:])
mn, mx = struct.unpack('>HH', p1[:4]); check('hello pad', all(x == 0 for x in p1[4:]))
hi, lo = min(smax, mx), max(smin, mn); ver = hi if lo <= hi and hi != 0 else 0
re_pub = x25519_pub(re_); r_.mix_hash(re_pub); r_.mix_key(x25519(re_, msg1[:32]))
msg2 = re_pub + r_.enc(struct.pack('>H', ver).ljust(HELLO_LEN, b'\0'))
check('msg2', len(msg2) == RECORD_LEN and msg2.hex() == hs['relay_hello_record_hex'])
# client reads msg2
c.mix_hash(msg2[:32]); c.mix_key(x25519(ce, msg2[:32])); p2 = c.dec(msg2[32:])
check('version', struct.unpack('>H', p2[:2])[0] == hs['negotiated_version'])
check('binding', c.h == r_.h and c.h.hex() == hs['handshake_hash_hex'])
k_c2r, k_r2c = c.split()
for t in hs['transport']:
    k = k_c2r if t['direction'] == 'client->relay' else k_r2c
    blk = block([bytes.fromhex(x) for x in t['frames_hex']])
    rec = aead(k, 0, b'', blk)
    check('transport ' + t['direction'], len(rec) == RECORD_LEN and rec.hex() == t['record_hex'])
# the signed Subscribe in the transport vector verifies over the real binding
t0 = bytes.fromhex(hs['transport'][0]['frames_hex'][0])
corr, ent, sig, cmd = decode_request(t0)
ask = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(hs['auth_seed_hex']))
try:
    ask.public_key().verify(sig, CTX + c.h + corr + ent + cmd); check('session-bound sig', True)
except Exception: check('session-bound sig', False)

# ---------- section 3.2: tunnel proof (protocol/tests/vectors/binding.json) ----------
def proof_key(relay_pub):
    return HKDF(hashes.SHA256(), 32, b'tidings proof v1', b'').derive(relay_pub)
def proof_tag(k, binding, nonce, minute):
    return hmac.new(k, b'tidings proof' + bytes([binding]) + nonce + struct.pack('>I', minute), hashlib.sha256).digest()[:16]
def check_proof(k, binding, path, now, seen):
    """None when the relay opens a tunnel, else the first check that failed."""
    if not path.startswith('/'): return 'Malformed'
    tok = path[1:]
    if len(tok) != 48 or not re.fullmatch(r'[A-Za-z0-9_-]{48}', tok): return 'Malformed'
    raw = b64url_decode_strict(tok)
    nonce, minute, tag = raw[:16], struct.unpack('>I', raw[16:20])[0], raw[20:]
    if abs(minute - now // 60) > 5: return 'OutOfWindow'
    if not hmac.compare_digest(proof_tag(k, binding, nonce, minute), tag): return 'BadTag'
    if nonce in seen: return 'Replayed'
    seen.add(nonce)
    return None
bv = load('binding.json')
bk = proof_key(bytes.fromhex(bv['relay_public_hex']))
check('proof key', bk.hex() == bv['proof_key_hex'])
for c in bv['proofs']:
    nonce = bytes.fromhex(c['nonce_hex'])
    tag = proof_tag(bk, c['binding'], nonce, c['minute'])
    tok = base64.urlsafe_b64encode(nonce + struct.pack('>I', c['minute']) + tag).rstrip(b'=').decode()
    seen = set()
    first = check_proof(bk, c['binding'], '/' + tok, c['minute'] * 60, seen)
    again = check_proof(bk, c['binding'], '/' + tok, c['minute'] * 60, seen)
    check('proof ' + c['name'], tag.hex() == c['tag_hex'] and tok == c['token'] and first is None and again == 'Replayed')
for c in bv['refused']:
    check('proof refused ' + c['name'], check_proof(bk, c['binding'], c['path'], c['now_unix_secs'], set()) == c['why'])

# ---------- section 12.8: safety code (client/tests/vectors/safety_code.txt) ----------
SAFETY_CTX = b"tidings safety code v1"
def fingerprint(key):
    d = hashlib.sha512(SAFETY_CTX + key).digest()
    for _ in range(5199):
        d = hashlib.sha512(d + key).digest()
    return ''.join('%05d' % (int.from_bytes(d[5 * j:5 * j + 5], 'big') % 100000) for j in range(6))
SC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'client', 'tests', 'vectors', 'safety_code.txt')
for line in open(SC):
    if line.startswith('#') or not line.strip():
        continue
    a, b, *groups = line.split()
    lo, hi = sorted([fingerprint(bytes.fromhex(a)), fingerprint(bytes.fromhex(b))])
    code = lo + hi
    check('safety code ' + a[:8], ' '.join(code[i:i + 5] for i in range(0, 60, 5)) == ' '.join(groups))

print('ok', ok, 'failed', bad)
sys.exit(1 if bad else 0)
