package remote

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Settings are provisioning.nixos-anywhere.ssh of a config: how every member is reached.
type Settings struct {
	User    string // default root
	Port    int    // default 22
	KeyFile string // default: ssh's own choice (config, agent)
}

// SettingsFromConfig reads provisioning.nixos-anywhere.ssh from a decoded config (core.LoadFile). The core
// has validated the port already; a malformed value is still an error, not a guess.
func SettingsFromConfig(cfg any) (Settings, error) {
	var s Settings
	ssh, _ := lookup(cfg, "provisioning", "nixos-anywhere", "ssh").(map[string]any)
	if ssh == nil {
		return s, nil
	}
	const path = "provisioning.nixos-anywhere.ssh"
	if v, ok := ssh["user"]; ok && v != nil {
		u, ok := v.(string)
		if !ok {
			return s, fmt.Errorf("%s.user must be a string, got %v", path, v)
		}
		s.User = u
	}
	if v, ok := ssh["keyFile"]; ok && v != nil {
		k, ok := v.(string)
		if !ok {
			return s, fmt.Errorf("%s.keyFile must be a string, got %v", path, v)
		}
		s.KeyFile = k
	}
	if v, ok := ssh["port"]; ok && v != nil {
		var p int
		var err error
		switch n := v.(type) {
		case json.Number:
			p, err = strconv.Atoi(n.String())
		case float64:
			p = int(n)
		case int:
			p = n
		default:
			err = fmt.Errorf("not a number")
		}
		if err != nil || p < 1 || p > 65535 {
			return s, fmt.Errorf("%s.port must be a port number from 1 to 65535, got %v", path, v)
		}
		s.Port = p
	}
	return s, nil
}

// Host is the host at addr reached with these settings.
func (s Settings) Host(name, addr string) Host {
	return Host{Name: name, Addr: addr, User: s.User, Port: s.Port, KeyFile: s.KeyFile}
}

func lookup(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
