package core

// Problem is one finding of the core's validate: Path is the dotted config path of the offending value
// (`clusters.prod.members.agent1.node`, empty for the config as a whole), Message says what is wrong and how
// to fix it.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Report is the result of validate: every problem at once. A config with Errors cannot be planned; Warnings
// never block.
type Report struct {
	Errors   []Problem `json:"errors"`
	Warnings []Problem `json:"warnings"`
}

// OK reports whether the config has no errors.
func (r Report) OK() bool { return len(r.Errors) == 0 }

// Plan is the core's plan (docs/core.md): per cluster, who is first, how members join and in which order
// they are rebuilt. The JSON tags follow the core's attribute names, so a Plan round-trips the core's JSON.
type Plan struct {
	// Clusters by name.
	Clusters map[string]Cluster `json:"clusters"`
}

// Cluster is the plan of one cluster.
type Cluster struct {
	// Name is the cluster's attribute name in the config.
	Name string `json:"name"`
	// FirstServer is the member that initialises the cluster (ha.firstServer, else the only or
	// alphabetically first server).
	FirstServer string `json:"firstServer"`
	// APIEndpoint is what every other member joins: https://<vip or first server ip>:6443.
	APIEndpoint string `json:"apiEndpoint"`
	// HA is the cluster's high-availability setting as the plan resolved it.
	HA HA `json:"ha"`
	// FlannelBackend is the cluster's flannel backend (the servers' last --flannel-backend, else "vxlan"): every
	// member opens its ports.
	FlannelBackend string `json:"flannelBackend"`
	// ManagedTokens is true when nix8s makes and delivers the cluster's token files (the config names no
	// secrets.tokenFile, agentTokenFile or token); false when they are the user's (sops-nix, agenix, ...).
	ManagedTokens bool `json:"managedTokens"`
	// APIServerAuthentication is the file the servers' --authentication-config points at (anonymous access to
	// the health endpoints only, so a load balancer can check /readyz), nil when nix8s writes none.
	APIServerAuthentication *FileContent `json:"apiServerAuthentication"`
	// K3sVersion is the requested k3s release (`v1.31.0+k3s1`), nil for the NixOS default.
	K3sVersion *string `json:"k3sVersion"`
	// Servers and Agents are member names, alphabetical.
	Servers []string `json:"servers"`
	Agents  []string `json:"agents"`
	// Provision is the join waves in order: the first server, each other server alone (concurrent etcd
	// joins fail, k3s-io/k3s#4335), then all agents together.
	Provision [][]string `json:"provision"`
	// Rollout is the rebuild order (design 8.4): agents, other servers, the first server last.
	Rollout []string `json:"rollout"`
	// UpgradeRollout is the rebuild order when the k3s version changes: other servers, the first server,
	// then agents (servers must not run an older k3s than the agents).
	UpgradeRollout []string `json:"upgradeRollout"`
	// RolloutWaves and UpgradeRolloutWaves are those orders as waves, what the operations run: the members of
	// one wave may go together (cut by --max-unavailable), the waves one after the other; each server is a
	// wave of its own, the agents one wave.
	RolloutWaves        [][]string `json:"rolloutWaves"`
	UpgradeRolloutWaves [][]string `json:"upgradeRolloutWaves"`
	// Members by name.
	Members map[string]Member `json:"members"`
	// Cozystack is what Cozystack needs of the cluster (clusters.<c>.cozystack, lib/cozystack.nix), nil without it.
	Cozystack *Cozystack `json:"cozystack"`
	// Lima is the cluster's Lima network (provisioning.lima, lib/lima.nix), nil when it does not run in Lima.
	Lima *LimaNetwork `json:"lima"`
}

// Cozystack is a cluster's Cozystack as the plan resolved it: the release, its pinned manifests, the objects
// bootstrap waits for and the platform Package rendered from the cluster's networks.
type Cozystack struct {
	// Version is the Cozystack release (v1.6.2).
	Version string `json:"version"`
	// Host is the publishing host.
	Host string `json:"host"`
	// APIServerEndpoint is the API as Cozystack and Cilium reach it (https://<host>:6443).
	APIServerEndpoint string `json:"apiServerEndpoint"`
	// APIServerHost replaces the operator manifest's placeholder: the cluster's endpoint host (VIP or first server).
	APIServerHost string `json:"apiServerHost"`
	// MaxPods is the kubelet's max-pods on every member.
	MaxPods int `json:"maxPods"`
	// BootstrapTimeout is how long bootstrap waits for the platform (a Go duration).
	BootstrapTimeout string `json:"bootstrapTimeout"`
	// Manifests are the release's manifests, pinned by hash.
	Manifests CozystackManifests `json:"manifests"`
	// Operator is the operator's Deployment.
	Operator struct {
		Namespace  string `json:"namespace"`
		Deployment string `json:"deployment"`
	} `json:"operator"`
	// CRDs are the CRDs cozystack-crds.yaml defines, waited for until Established.
	CRDs []string `json:"crds"`
	// PackageSource is the PackageSource the operator creates and the Package must be named after.
	PackageSource string `json:"packageSource"`
	// Package is the platform Package (cozystack.io/v1alpha1), applied as it is.
	Package map[string]any `json:"package"`
}

// CozystackManifests are the two release manifests bootstrap applies.
type CozystackManifests struct {
	CRDs     Pinned `json:"crds"`
	Operator Pinned `json:"operator"`
	// Placeholder is the operator manifest's API host placeholder ("REPLACE_ME").
	Placeholder string `json:"placeholder"`
}

// Pinned is a file fixed by its hash.
type Pinned struct {
	URL string `json:"url"`
	// Hash is the SRI sha256 hash of the file, nil when none is pinned (then nothing is applied).
	Hash *string `json:"hash"`
}

// FileContent is a file the plan puts on a node: its path and its content as JSON data.
type FileContent struct {
	Path    string         `json:"path"`
	Content map[string]any `json:"content"`
}

// HA is a cluster's high-availability setting.
type HA struct {
	// Enable is ha.enable.
	Enable bool `json:"enable"`
	// VIP is the virtual IP of the API endpoint, nil without HA.
	VIP *string `json:"vip"`
	// LoadBalancer serves the VIP: "keepalived" (keepalived + haproxy on the servers), "external", or nil
	// without a VIP.
	LoadBalancer *string `json:"loadBalancer"`
}

// Member is one machine of a cluster.
type Member struct {
	// Name is the member's attribute name.
	Name string `json:"name"`
	// HostName is `<cluster>-<member>`, also the nixosConfigurations attribute.
	HostName string `json:"hostName"`
	// Node is the node template's name, nil when the member gave its template inline.
	Node *string `json:"node"`
	// Role is "server" or "agent".
	Role string `json:"role"`
	// IP is the member's IPv4 address.
	IP string `json:"ip"`
	// MAC is the member's network.mac (its override, else the template's), nil when neither sets one.
	MAC *string `json:"mac"`
	// K3s is how the member runs k3s.
	K3s K3s `json:"k3s"`
	// Config is the node template recursively merged with the member's overrides, data only.
	Config map[string]any `json:"config"`
	// SSH is how the operations reach the member: its address and provisioning.nixos-anywhere.ssh, resolved.
	SSH SSH `json:"ssh"`
}

// SSH is a member's SSH endpoint as the plan resolved it.
type SSH struct {
	// Host is the address to connect to: the member's IP, unless its provisioner forwards a port elsewhere.
	Host string `json:"host"`
	// Port is the ssh port (default 22).
	Port int `json:"port"`
	// User is the login user (default "root").
	User string `json:"user"`
	// KeyFile is the private key to offer (ssh -i), nil to leave it to ssh's config and agent.
	KeyFile *string `json:"keyFile"`
	// Lima is the member's Lima instance when it runs in Lima (Host is then 127.0.0.1 and Port its forward,
	// 0 when Lima picks one at start: internal/lima resolves it), empty otherwise.
	Lima string `json:"lima,omitempty"`
}

// LimaNetwork is a Lima cluster's own user-v2 network (docs/lima.md).
type LimaNetwork struct {
	// Name is the Lima network, `nix8s-<cluster>`.
	Name string `json:"name"`
	// Subnet is its CIDR; Prefix its prefix length.
	Subnet string `json:"subnet"`
	Prefix int    `json:"prefix"`
	// GatewayArg is what `limactl network create --gateway` is given; Gateway the address Lima serves
	// gateway and DNS on (the subnet's second address).
	GatewayArg string `json:"gatewayArg"`
	Gateway    string `json:"gateway"`
	// APIEndpoint is the first server's API as the host reaches it (its forwarded 6443), nil without one.
	APIEndpoint *string `json:"apiEndpoint"`
}

// K3s is the k3s service of one member.
type K3s struct {
	// Role is "server" or "agent".
	Role string `json:"role"`
	// ClusterInit is true on the first server only.
	ClusterInit bool `json:"clusterInit"`
	// ServerAddr is the endpoint to join, nil on the first server.
	ServerAddr *string `json:"serverAddr"`
	// Flags are k3s command-line flags, one `--name=value` per element.
	Flags []string `json:"flags"`
	// TokenFile is the path of the cluster token on the host.
	TokenFile string `json:"tokenFile"`
	// AgentTokenFile is the path of the agent token on the host, nil when agents use TokenFile.
	AgentTokenFile *string `json:"agentTokenFile"`
}

// PXEPlan is the core's PXE view (docs/core.md): what a PXE server serving some clusters boots, and every
// problem of the config and of network boot itself.
type PXEPlan struct {
	// Errors are validate's errors followed by the PXE server's own (members sharing a MAC, addresses outside
	// dhcp.subnet, a missing server ip, an unknown cluster). PXE returns an *InvalidError instead of a plan
	// that has any.
	Errors []Problem `json:"errors"`
	// Warnings are validate's warnings, less those the PXE view turned into errors.
	Warnings []Problem `json:"warnings"`
	// Unmatched are the served members without a MAC: no machine boots as them until one is assigned to them
	// over REST. Where the config is all there is (nix8sd serve --config), they are errors.
	Unmatched []Problem `json:"unmatched"`
	// Server is provisioning.pxe.server.
	Server PXEServer `json:"server"`
	// Machines are the served members that have a MAC, sorted by MAC.
	Machines []PXEMachine `json:"machines"`
}

// PXEServer is the PXE server's configuration (provisioning.pxe.server); nil fields are not set.
type PXEServer struct {
	// IP is the address the server serves from (DHCP next-server, TFTP, HTTP).
	IP *string `json:"ip"`
	// Interface is the network interface it serves.
	Interface *string `json:"interface"`
	// Mode is the DHCP mode: "proxy" (the default: beside the site's DHCP server, no addresses) or "full".
	Mode string `json:"mode"`
	// Subnet is dhcp.subnet (`192.168.1.0/24`).
	Subnet *string `json:"subnet"`
	// RangeStart and RangeEnd are the two ends of dhcp.range, the addresses full mode leases.
	RangeStart *string `json:"rangeStart"`
	RangeEnd   *string `json:"rangeEnd"`
	// Gateway is dhcp.gateway, the router full mode hands out.
	Gateway *string `json:"gateway"`
	// Approve is provisioning.pxe.approve ("servers" when unset): whose secrets wait, after a network
	// install, until an operator confirms the host key the installer reported: "servers", "all" or "none".
	Approve string `json:"approve"`
}

// PXEMachine is one member the PXE server boots, known by its MAC.
type PXEMachine struct {
	// MAC is the member's network.mac, lower case.
	MAC string `json:"mac"`
	// Cluster and Member name the member; HostName is `<cluster>-<member>`.
	Cluster  string `json:"cluster"`
	Member   string `json:"member"`
	HostName string `json:"hostName"`
	// Role is "server" or "agent".
	Role string `json:"role"`
	// IP is the member's plan address.
	IP string `json:"ip"`
	// Wave is the index of the member's wave in the cluster plan's Provision: the first server is 0, each
	// other server its own wave, then all agents together.
	Wave int `json:"wave"`
}
