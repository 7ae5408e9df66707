package sshtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// K3sTokens is a stand-in for k3s on one ready server node, for the join tokens of agents: k3s cannot run
// here. It lives in the node's private /etc (k3sTokensPath), where the nodes' shared k3s on PATH (the
// StandIns' one, or a dispatcher of its own when the net has none) hands every call over to it; so it
// survives the stand-in install's replacing /run/current-system. It does what nix8s asks of k3s there:
//
//   - `k3s token create --ttl D --description S` prints, on stdout only, a new bootstrap token in k3s's secure
//     form K10<sha256 of a CA>::<id>.<secret> (id 6 and secret 16 lowercase hex characters, as k3s's
//     [a-z0-9]{6}.[a-z0-9]{16}), and a log line on stderr as k3s's logging would; with SetFail it fails as k3s
//     does when its API server is not up.
//   - `k3s token delete ID` deletes a token it made, and fails for any other.
//   - `k3s kubectl get node NAME -o json` describes NAME as a Ready node once the agent named for it in
//     JoinFrom holds, in its token file, a token this server made and has not deleted (k3s registers an agent
//     that presents a valid bootstrap token); a node that joined stays Ready after its token is deleted, as a
//     k3s agent goes on with its kubelet client certificate. A node the StandIns installed as never Ready
//     (StandIns.SetNotReady) is described as the StandIns describe it: not Ready.
//   - Anything else, a NAME not named in JoinFrom included, goes to the StandIns' k3s when the net has one
//     (Net.StandIns before or after), so that a server the stand-in nixos-anywhere installs also answers
//     /readyz and knows the nodes it registered; without one, k3s is "not found" for it.
//
// Every call is recorded with its arguments (Calls).
type K3sTokens struct {
	// Dir is the stand-in's state, shared by the host and the node: calls, tokens, deleted, joined/, joins.
	Dir string
}

// k3sTokensPath is where a node's K3sTokens stand-in lives (the node's own /etc).
const k3sTokensPath = "/etc/nix8s-test/k3s"

// k3sDispatch is the nodes' k3s on PATH when the net has no StandIns: a node's K3sTokens, or none. The
// StandIns' k3s starts the same way.
const k3sDispatch = `[ -z "${NIX8S_K3S_INNER:-}" ] && [ -x ` + k3sTokensPath + ` ] && exec ` + k3sTokensPath + ` "$@"
`

// K3sTokens puts the stand-in on node.
func (n *Net) K3sTokens(t testing.TB, node *Node) *K3sTokens {
	t.Helper()
	k := &K3sTokens{Dir: filepath.Join(n.Dir, "k3stokens-"+node.Name)}
	if err := os.MkdirAll(filepath.Join(k.Dir, "joined"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("@STATE@", k.Dir, "@NODEBIN@", n.BinDir()).Replace(k3sTokens)
	node.WriteFile(t, k3sTokensPath, script, 0o755)
	shared := filepath.Join(n.BinDir(), "k3s")
	if _, err := os.Stat(shared); os.IsNotExist(err) {
		write(t, shared, "#!/bin/sh\n"+k3sDispatch+`echo "sh: 1: k3s: not found" >&2; exit 127`+"\n")
	}
	return k
}

// JoinFrom makes the stand-in's cluster take the node called name once agent's file path (as the agent sees
// it; under /etc, /var or /run) holds a live token of this server.
func (k *K3sTokens) JoinFrom(t testing.TB, name string, agent *Node, path string) {
	t.Helper()
	host := filepath.Join(agent.Dir, "upper", strings.TrimPrefix(path, "/"))
	f, err := os.OpenFile(filepath.Join(k.Dir, "joins"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(name + " " + host + "\n"); err != nil {
		t.Fatal(err)
	}
}

// SetFail makes token create fail (true) or work again (false).
func (k *K3sTokens) SetFail(t testing.TB, fail bool) {
	t.Helper()
	p := filepath.Join(k.Dir, "fail")
	if !fail {
		os.Remove(p)
		return
	}
	write(t, p, "1\n")
}

// Calls are the stand-in's calls, one line of arguments each.
func (k *K3sTokens) Calls(t testing.TB) []string { return k.lines(t, "calls") }

// Tokens are the tokens it made, in full.
func (k *K3sTokens) Tokens(t testing.TB) []string { return k.lines(t, "tokens") }

// Deleted are the ids of the tokens deleted.
func (k *K3sTokens) Deleted(t testing.TB) []string { return k.lines(t, "deleted") }

func (k *K3sTokens) lines(t testing.TB, name string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(k.Dir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

const k3sTokens = `#!/bin/sh
# Stand-in for k3s on a ready server: join tokens (see internal/sshtest/k3stokens.go).
S=@STATE@
echo "$*" >>"$S/calls"
live() { grep -qxF "$1" "$S/tokens" 2>/dev/null && ! grep -qxF "${1%%.*}" "$S/deleted" 2>/dev/null; }
other() { NIX8S_K3S_INNER=1 exec @NODEBIN@/k3s "$@"; }
case "${1:-} ${2:-}" in
  "token create")
    if [ -e "$S/fail" ]; then
      echo 'time="2026-01-01T00:00:00Z" level=fatal msg="Get \"https://127.0.0.1:6443/api/v1/namespaces/kube-system/secrets/bootstrap-token-x\": dial tcp 127.0.0.1:6443: connect: connection refused"' >&2
      exit 1
    fi
    hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
    t=$(hex 3).$(hex 8)
    echo "$t" >>"$S/tokens"
    echo 'time="2026-01-01T00:00:00Z" level=info msg="stand-in: bootstrap token created"' >&2
    echo "K10$(echo nix8s-test-ca | sha256sum | cut -c1-64)::$t" ;;
  "token delete")
    id=${3:-}
    grep -q "^$id\." "$S/tokens" 2>/dev/null && ! grep -qxF "$id" "$S/deleted" 2>/dev/null ||
      { echo "Error: failed to delete bootstrap token \"$id\": secrets \"bootstrap-token-$id\" not found" >&2; exit 1; }
    echo "$id" >>"$S/deleted"
    echo "bootstrap token \"$id\" deleted" ;;
  "kubectl get")
    [ "${3:-}" = node ] && [ "${5:-}" = -o ] && [ "${6:-}" = json ] || other "$@"
    name=$4
    [ -e "$S/joined/$name" ] || awk -v n="$name" '$1 == n { f = 1 } END { exit !f }' "$S/joins" 2>/dev/null || other "$@"
    if [ ! -e "$S/joined/$name" ]; then
      file=$(awk -v n="$name" '$1 == n { print $2 }' "$S/joins" 2>/dev/null | tail -n 1)
      tok=$(cat "$file" 2>/dev/null)
      if [ -n "$file" ] && live "${tok##*::}"; then : >"$S/joined/$name"; fi
    fi
    [ -e "$S/joined/$name" ] || { echo "Error from server (NotFound): nodes \"$name\" not found" >&2; exit 1; }
    # A node the StandIns installed as never Ready (SetNotReady) stays not Ready, joined or not.
    if out=$(NIX8S_K3S_INNER=1 @NODEBIN@/k3s "$@" 2>/dev/null) && printf '%s' "$out" | grep -qF '"type":"Ready","status":"False"'; then
      printf '%s\n' "$out"; exit 0
    fi
    printf '{"kind":"Node","metadata":{"name":"%s"},"status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.31.0+k3s1"}}}\n' "$name" ;;
  *) other "$@" ;;
esac
`
