package remote

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
)

// MaxHostKey bounds a public host key line (a 16384-bit RSA key is about 2.8 KB of base64).
const MaxHostKey = 4096

// hostKeyTypes are the host key types nix8s accepts from an installer.
var hostKeyTypes = []string{"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}

// CheckHostKey checks a public SSH host key as a known_hosts entry takes it: one line `<type> <base64>`
// (no comment), type ssh-ed25519, ecdsa-sha2-nistp256 or ssh-rsa, the base64 a key blob of that type, at
// most MaxHostKey bytes. Nothing else may pass: the key goes into a known_hosts file verbatim.
func CheckHostKey(key string) error {
	if len(key) > MaxHostKey {
		return fmt.Errorf("host key is %d bytes, more than %d", len(key), MaxHostKey)
	}
	typ, b64, ok := strings.Cut(key, " ")
	known := false
	for _, t := range hostKeyTypes {
		known = known || typ == t
	}
	if !ok || !known {
		return fmt.Errorf("host key must be `<type> <base64>` with type %s (the .pub file's first two fields)", strings.Join(hostKeyTypes, ", "))
	}
	blob, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(blob) < 4 {
		return fmt.Errorf("host key of type %s: the key is not base64 (the .pub file's second field, without a comment)", typ)
	}
	// The blob starts with its own type as an SSH string: a key of one type cannot pose as another.
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != typ {
		return fmt.Errorf("host key of type %s: the base64 does not hold an %s key", typ, typ)
	}
	return nil
}
