# Eval tests of the pure core: a list of { name; expected; actual; } that tests/core_test.go compares one by one.
# Names say the behaviour. Configs are small and built from `base` so each case shows only what it changes.
let
  core = import ../lib;
  u = core.internal.u;
  inherit (builtins) attrNames catAttrs elem filter head length map toJSON;

  base = {
    nodes.std = { network.mac = "aa:bb:cc:dd:ee:01"; install.disk = "/dev/sda"; };
    clusters.dev = {
      k3s.version = "v1.31.0+k3s1";
      members = {
        server = { node = "std"; role = "server"; ip = "10.0.0.10"; };
        agent = { node = "std"; role = "agent"; ip = "10.0.0.20"; network.mac = "aa:bb:cc:dd:ee:02"; };
      };
    };
  };

  ha = {
    nodes.srv = { install.disk = "/dev/nvme0n1"; };
    clusters.prod = {
      ha = { enable = true; vip = "10.1.0.100"; };
      k3s.network = { clusterCidr = "10.42.0.0/16"; serviceCidr = "10.43.0.0/16"; clusterDns = "10.43.0.10"; };
      k3s.extraArgs = { server = [ "--disable=traefik" ]; agent = [ "--node-label=tier=worker" ]; };
      members = {
        s1 = { node = "srv"; role = "server"; ip = "10.1.0.11"; };
        s2 = { node = "srv"; role = "server"; ip = "10.1.0.12"; };
        s3 = { node = "srv"; role = "server"; ip = "10.1.0.13"; };
        a1 = { node = "srv"; role = "agent"; ip = "10.1.0.21"; };
        a2 = { node = "srv"; role = "agent"; ip = "10.1.0.22"; };
      };
    };
  };

  withCluster = cfg: name: f: cfg // { clusters = cfg.clusters // { ${name} = f cfg.clusters.${name}; }; };
  withMember = cfg: c: m: f: withCluster cfg c (cl: cl // { members = cl.members // { ${m} = f (cl.members.${m} or { }); }; });

  errorPaths = cfg: catAttrs "path" (core.validate cfg).errors;
  warningPaths = cfg: catAttrs "path" (core.validate cfg).warnings;
  messages = cfg: catAttrs "message" (core.validate cfg).errors;
  messageOf = cfg: path: head (catAttrs "message" (filter (e: e.path == path) (core.validate cfg).errors));

  plan = cfg: core.plan cfg;
  failsToPlan = cfg: !(builtins.tryEval (builtins.deepSeq (core.plan cfg) true)).success;

  withPxe = server: base // { provisioning.pxe.server = server; };
  # base served by a PXE server on its network; the cases change one thing each.
  pxeBase = withPxe { ip = "10.0.0.1"; interface = "eth0"; dhcp.subnet = "10.0.0.0/24"; };
  pxeErrors = cfg: clusters: catAttrs "path" (core.pxe cfg clusters).errors;
  pxeMessageOf = cfg: path: head (catAttrs "message" (filter (e: e.path == path) (core.pxe cfg null).errors));

  # base with Cozystack (issue 14): k3s new enough, a publishing domain; the cases change one thing each.
  cozy = withCluster base "dev" (c: c // { k3s.version = "v1.34.2+k3s1"; domain = "cozy.example.com"; cozystack.enable = true; });
  withCozy = f: withCluster cozy "dev" (c: c // { cozystack = f c.cozystack; });
  withK3s = f: withCluster cozy "dev" (c: c // { k3s = f c.k3s; });
  cozyPlan = cfg: (core.plan cfg).clusters.dev;

  case = name: expected: actual: { inherit name expected actual; };
in [
  # ---- validation: the happy path ----------------------------------------------------------------------------------
  (case "a valid config has no errors and no warnings" { errors = [ ]; warnings = [ ]; } (core.validate base))
  (case "an empty config is valid" { errors = [ ]; warnings = [ ]; } (core.validate { }))
  (case "a config that is not an attribute set is an error, not an empty config"
    [ { path = ""; message = "the config must be an attribute set (a mapping) with nodes, clusters and provisioning, got a list"; } ]
    (core.validate [ 1 2 3 ]).errors)

  # ---- validation: every error names its path ----------------------------------------------------------------------
  (case "unknown node reference lists the known nodes"
    [ "clusters.dev.members.agent.node" "no node named \"gpu\"; known nodes: \"std\"" ]
    (let c = withMember base "dev" "agent" (m: m // { node = "gpu"; }); in [ (head (errorPaths c)) (messageOf c "clusters.dev.members.agent.node") ]))
  (case "missing node reference" [ "clusters.dev.members.agent.node" ]
    (errorPaths (withMember base "dev" "agent" (m: removeAttrs m [ "node" ]))))
  (case "role other than server/agent"
    [ "clusters.dev.members.agent.role" ]
    (errorPaths (withMember base "dev" "agent" (m: m // { role = "worker"; }))))
  (case "missing ip" [ "clusters.dev.members.agent.ip" ]
    (errorPaths (withMember base "dev" "agent" (m: removeAttrs m [ "ip" ]))))
  (case "malformed IPv4 addresses are refused: octet too big, leading zero, too few octets"
    [ [ "clusters.dev.members.agent.ip" ] [ "clusters.dev.members.agent.ip" ] [ "clusters.dev.members.agent.ip" ] ]
    (map (ip: errorPaths (withMember base "dev" "agent" (m: m // { inherit ip; }))) [ "10.0.0.256" "10.0.0.020" "10.0.0" ]))
  (case "two members with one IP: the later one is named, with the earlier"
    [ "clusters.dev.members.server.ip" "\"10.0.0.20\" is also the ip of member \"agent\"; every member needs its own address" ]
    (let c = withMember base "dev" "server" (m: m // { ip = "10.0.0.20"; }); in [ (head (errorPaths c)) (messageOf c "clusters.dev.members.server.ip") ]))
  (case "the same IP in two clusters is fine" [ ]
    (errorPaths (withCluster base "other" (_: base.clusters.dev // {
      members = builtins.mapAttrs (_: m: m // { network.mac = null; }) base.clusters.dev.members; }))))
  (case "a cluster without a server" [ "clusters.dev.members" ]
    (errorPaths (withMember base "dev" "server" (m: m // { role = "agent"; }))))
  (case "a cluster without members" [ "clusters.dev.members" ]
    (errorPaths (withCluster base "dev" (c: c // { members = { }; }))))
  (case "install.disk and disko on one node" [ "nodes.std.disko" ]
    (errorPaths (base // { nodes.std = base.nodes.std // { disko.devices = { }; }; })))
  (case "install.disk and disko after a member override"
    [ "clusters.dev.members.agent" ]
    (errorPaths (withMember base "dev" "agent" (m: m // { disko.devices.disk = { }; }))))
  (case "a member override can drop install.disk in favour of disko" [ ]
    (errorPaths (withMember base "dev" "agent" (m: m // { install.disk = null; disko.devices.disk = { }; }))))
  (case "HA with more than one server and no vip" [ "clusters.prod.ha.vip" ]
    (errorPaths (withCluster ha "prod" (c: c // { ha = { enable = true; }; }))))
  (case "HA with a single server needs no vip" [ ]
    (errorPaths (withCluster base "dev" (c: c // { ha.enable = true; }))))
  (case "ha.firstServer that is not a server member lists the servers"
    [ "clusters.prod.ha.firstServer" "\"a1\" is not a server member of this cluster; server members: \"s1\", \"s2\", \"s3\"" ]
    (let c = withCluster ha "prod" (c: c // { ha = c.ha // { firstServer = "a1"; }; }); in [ (head (errorPaths c)) (messageOf c "clusters.prod.ha.firstServer") ]))
  (case "a VIP equal to a member IP" [ "clusters.prod.members.s2.ip" ]
    (errorPaths (withCluster ha "prod" (c: c // { ha = c.ha // { vip = "10.1.0.12"; }; }))))
  (case "malformed VIP" [ "clusters.prod.ha.vip" ]
    (errorPaths (withCluster ha "prod" (c: c // { ha = c.ha // { vip = "10.1.0"; }; }))))
  (case "malformed MAC on a node and on a member override"
    [ "nodes.std.network.mac" "clusters.dev.members.agent.network.mac" ]
    (errorPaths (withMember (base // { nodes.std = base.nodes.std // { network.mac = "aa:bb:cc:dd:ee"; }; }) "dev" "agent"
      (m: m // { network.mac = "zz:bb:cc:dd:ee:02"; }))))
  (case "member names must be host names"
    [ "clusters.dev.members.\"-agent\"" "clusters.dev.members.Agent_1" ]
    (errorPaths (withCluster base "dev" (c: c // { members = c.members // {
      Agent_1 = { node = "std"; role = "agent"; ip = "10.0.0.21"; network.mac = "aa:bb:cc:dd:ee:21"; };
      "-agent" = { node = "std"; role = "agent"; ip = "10.0.0.22"; network.mac = "aa:bb:cc:dd:ee:22"; }; }; }))))
  (case "<cluster>-<member> longer than 63 characters"
    [ "clusters.dev.members.a123456789012345678901234567890123456789012345678901234567890" ]
    (errorPaths (withMember base "dev" "a123456789012345678901234567890123456789012345678901234567890" (_: { node = "std"; role = "agent"; ip = "10.0.0.30"; network.mac = "aa:bb:cc:dd:ee:30"; }))))
  (case "two clusters whose members end up with one host name"
    [ "clusters.dev-a.members.b" ]
    (errorPaths (base // { clusters = base.clusters // {
      dev-a = { members.b = { node = "std"; role = "server"; ip = "10.0.0.1"; network.mac = "aa:bb:cc:dd:ee:31"; }; };
      dev = base.clusters.dev // { members = base.clusters.dev.members // { a-b = { node = "std"; role = "agent"; ip = "10.0.0.2"; network.mac = "aa:bb:cc:dd:ee:32"; }; }; }; }; })))
  (case "malformed CIDRs and host bits set"
    [ "clusters.dev.k3s.network.clusterCidr" "clusters.dev.k3s.network.serviceCidr" ]
    (errorPaths (withCluster base "dev" (c: c // { k3s = c.k3s // { network = { clusterCidr = "10.42.0.0"; serviceCidr = "10.43.1.0/16"; }; }; }))))
  (case "host bits set names the network"
    "\"10.43.1.0/16\" has host bits set; the network is \"10.43.0.0/16\""
    (messageOf (withCluster base "dev" (c: c // { k3s = c.k3s // { network.serviceCidr = "10.43.1.0/16"; }; })) "clusters.dev.k3s.network.serviceCidr"))
  (case "clusterDns outside serviceCidr" [ "clusters.dev.k3s.network.clusterDns" ]
    (errorPaths (withCluster base "dev" (c: c // { k3s = c.k3s // { network = { serviceCidr = "10.43.0.0/16"; clusterDns = "10.44.0.10"; }; }; }))))
  (case "k3s.version not of the form v1.31.0+k3s1"
    [ [ "clusters.dev.k3s.version" ] [ "clusters.dev.k3s.version" ] [ "clusters.dev.k3s.version" ] [ ] ]
    (map (version: errorPaths (withCluster base "dev" (c: c // { k3s.version = version; }))) [ "1.31.0" "v1.31+k3s1" "v1.31.0-k3s1" "v1.32.5+k3s2" ]))
  (case "provisioning: ssh settings that ssh cannot use name each field"
    [ { path = "provisioning.nixos-anywhere.ssh.port"; message = "must be a port number from 1 to 65535, got \"22\""; }
      { path = "provisioning.nixos-anywhere.ssh.user"; message = "must be a non-empty string (the login user, such as \"root\"), got 0"; }
      { path = "provisioning.nixos-anywhere.ssh.keyFile"; message = "must be a non-empty string (the path of a private key on the operator's machine), got \"\""; } ]
    (core.validate (base // { provisioning.nixos-anywhere.ssh = { port = "22"; user = 0; keyFile = ""; }; })).errors)
  (case "provisioning: ssh settings must be a mapping"
    [ { path = "provisioning.nixos-anywhere.ssh"; message = "must be an attribute set, got \"root@host\""; } ]
    (core.validate (base // { provisioning.nixos-anywhere.ssh = "root@host"; })).errors)
  (case "provisioning: PXE range outside its subnet, bad ssh port"
    [ "provisioning.pxe.server.dhcp.range" "provisioning.nixos-anywhere.ssh.port" ]
    (errorPaths (base // { provisioning = {
      pxe.server = { ip = "10.0.0.1"; dhcp = { subnet = "10.0.0.0/24"; range = "10.0.1.100-10.0.1.200"; }; };
      nixos-anywhere.ssh.port = 70000; }; })))
  (case "provisioning: a DHCP mode other than proxy/full names both"
    [ { path = "provisioning.pxe.server.dhcp.mode"; message = "\"relay\" is not a DHCP mode; use \"proxy\" (beside the site's DHCP server, hands out no addresses) or \"full\" (leases addresses from dhcp.range)"; } ]
    (core.validate (withPxe { dhcp.mode = "relay"; })).errors)
  (case "provisioning: full DHCP mode needs a range and a subnet"
    [ "provisioning.pxe.server.dhcp.range" "provisioning.pxe.server.dhcp.subnet" ]
    (errorPaths (withPxe { dhcp.mode = "full"; })))
  (case "provisioning: full DHCP mode with range and subnet, and proxy mode without them, are valid" [ [ ] [ ] ]
    [ (errorPaths (withPxe { ip = "10.0.0.1"; dhcp = { mode = "full"; range = "10.0.0.100-10.0.0.200"; subnet = "10.0.0.0/24"; }; }))
      (errorPaths (withPxe { ip = "10.0.0.1"; dhcp.mode = "proxy"; })) ])
  (case "every problem is reported, not just the first"
    [ "clusters.dev.k3s.version" "clusters.dev.members.agent.node" "clusters.dev.members.agent.role" "clusters.dev.members.server.ip" ]
    (errorPaths (withMember (withMember (withCluster base "dev" (c: c // { k3s.version = "latest"; })) "dev" "agent"
      (m: m // { node = "nope"; role = "boss"; })) "dev" "server" (m: m // { ip = "x"; }))))
  (case "names that are not identifiers are quoted in paths" [ "nodes.\"a.b\".network.mac" ]
    (errorPaths { nodes."a.b".network.mac = "nope"; }))
  (case "a plain token is a warning, not an error" { errors = [ ]; warnings = [ "clusters.dev.secrets.token" ]; }
    (let r = core.validate (withCluster base "dev" (c: c // { secrets.token = "s3cret"; })); in { errors = r.errors; warnings = catAttrs "path" r.warnings; }))

  # ---- validation: warnings ------------------------------------------------------------------------------------------
  (case "several servers without HA warn about the single point of failure" [ "clusters.prod.ha.enable" ]
    (warningPaths (withCluster ha "prod" (c: c // { ha = { }; }))))

  # ---- rules the core owns rather than nix8sd (issue 9): top-level keys, DHCP range and gateway, shared MACs ---------------
  (case "an unknown top-level key is an error at its own path, with the three sections named"
    [ { path = "cluster"; message = "unknown top-level key; a config has only nodes, clusters and provisioning: move it under one of them, or remove it"; } ]
    (core.validate (base // { cluster = { }; })).errors)
  (case "unknown top-level keys that are not identifiers are quoted, each reported" [ "\"$schema\"" "extra" ]
    (errorPaths (base // { "$schema" = "x"; extra = 1; })))
  (case "an unknown top-level key fails the plan and the PXE view too" [ true [ "extra" ] ]
    [ (failsToPlan (base // { extra = 1; })) (pxeErrors (pxeBase // { extra = 1; }) null) ])
  (case "a DHCP range that starts after it ends names the range and the fix"
    [ { path = "provisioning.pxe.server.dhcp.range"; message = "\"10.0.0.200-10.0.0.100\" starts after it ends; write the lower address first: \"10.0.0.100-10.0.0.200\""; } ]
    (core.validate (withPxe { ip = "10.0.0.1"; dhcp = { mode = "full"; subnet = "10.0.0.0/24"; range = "10.0.0.200-10.0.0.100"; }; })).errors)
  (case "a one-address DHCP range is fine; ranges compare as numbers, not text" [ [ ] [ ] ]
    (map (range: errorPaths (withPxe { ip = "10.0.0.1"; dhcp = { mode = "full"; subnet = "10.0.0.0/24"; inherit range; }; }))
      [ "10.0.0.100-10.0.0.100" "10.0.0.9-10.0.0.10" ]))
  (case "a DHCP gateway outside dhcp.subnet names the gateway and the fix"
    [ { path = "provisioning.pxe.server.dhcp.gateway"; message = "\"10.0.1.1\" is outside dhcp.subnet \"10.0.0.0/24\"; DHCP clients can only reach a router on their own network: set gateway to the router's address in the subnet, or fix the subnet"; } ]
    (core.validate (withPxe { ip = "10.0.0.1"; dhcp = { mode = "full"; subnet = "10.0.0.0/24"; range = "10.0.0.100-10.0.0.200"; gateway = "10.0.1.1"; }; })).errors)
  (case "a gateway inside the subnet, or without a subnet to check against, is fine" [ [ ] [ ] ]
    [ (errorPaths (withPxe { ip = "10.0.0.1"; dhcp = { subnet = "10.0.0.0/24"; gateway = "10.0.0.254"; }; }))
      (errorPaths (withPxe { ip = "10.0.0.1"; dhcp.gateway = "10.9.0.1"; })) ])
  (case "members sharing their node template's MAC: an error naming both members, the template and the fix"
    { warnings = [ ]; errors = [ { path = "clusters.dev.members.server.network.mac";
        message = "\"aa:bb:cc:dd:ee:01\" is also the MAC of clusters.dev.members.agent: both take it from nodes.std.network.mac, but a MAC names one machine (the PXE server boots machines by it); set network.mac on each member to its own machine's MAC and remove it from nodes.std.network.mac"; } ]; }
    (let r = core.validate (withMember base "dev" "agent" (m: removeAttrs m [ "network" ])); in { inherit (r) errors; warnings = catAttrs "path" r.warnings; }))
  (case "a member override with the template's MAC of another member, compared without regard to case, names where each is set"
    [ { path = "clusters.dev.members.server.network.mac";
        message = "\"aa:bb:cc:dd:ee:01\" (set at nodes.std.network.mac) is also the MAC of clusters.dev.members.agent (set at clusters.dev.members.agent.network.mac), but a MAC names one machine (the PXE server boots machines by it); give each member its own network.mac"; } ]
    (core.validate (withMember base "dev" "agent" (m: m // { network.mac = "AA:BB:CC:DD:EE:01"; }))).errors)
  (case "three members on one template with a MAC: every member after the first is named" [ "clusters.dev.members.b.network.mac" "clusters.dev.members.server.network.mac" ]
    (errorPaths (withMember (withMember base "dev" "agent" (m: removeAttrs m [ "network" ])) "dev" "b" (_: { node = "std"; role = "agent"; ip = "10.0.0.21"; }))))
  (case "a MAC shared across clusters and through an inline node names the inline node's path"
    [ "\"aa:bb:cc:dd:ee:01\" (set at nodes.std.network.mac) is also the MAC of clusters.aaa.members.s (set at clusters.aaa.members.s.node.network.mac), but a MAC names one machine (the PXE server boots machines by it); give each member its own network.mac" ]
    (messages (withCluster base "aaa" (_: { members.s = { node = { network.mac = "aa:bb:cc:dd:ee:01"; install.disk = "/dev/sda"; }; role = "server"; ip = "10.0.0.1"; }; }))))
  (case "a member can drop its template's MAC with null: no shared MAC" [ ]
    (errorPaths (withMember base "dev" "agent" (m: m // { network.mac = null; }))))

  # ---- plan -------------------------------------------------------------------------------------------------------------
  (case "plan refuses an invalid config with every error in one message" true
    (failsToPlan (withMember base "dev" "agent" (m: m // { node = "gpu"; role = "x"; }))))
  (case "the only server is first, initialises the cluster and has no serverAddr"
    { firstServer = "server"; clusterInit = true; serverAddr = null; apiEndpoint = "https://10.0.0.10:6443"; }
    (let p = (plan base).clusters.dev; in { inherit (p) firstServer apiEndpoint; inherit (p.members.server.k3s) clusterInit serverAddr; }))
  (case "agents join the first server's address without HA" "https://10.0.0.10:6443"
    (plan base).clusters.dev.members.agent.k3s.serverAddr)
  (case "without ha.firstServer the alphabetically first server initialises" "s1" (plan ha).clusters.prod.firstServer)
  (case "ha.firstServer picks the initialising server"
    { firstServer = "s2"; init = [ "s2" ]; }
    (let p = (plan (withCluster ha "prod" (c: c // { ha = c.ha // { firstServer = "s2"; }; }))).clusters.prod; in
      { inherit (p) firstServer; init = filter (n: p.members.${n}.k3s.clusterInit) (attrNames p.members); }))
  (case "agents and servers join through the VIP when HA is on"
    [ "https://10.1.0.100:6443" "https://10.1.0.100:6443" "https://10.1.0.100:6443" ]
    (let p = (plan ha).clusters.prod; in map (n: p.members.${n}.k3s.serverAddr) [ "s2" "s3" "a1" ]))
  (case "provision waves: first server, each other server alone, then all agents"
    [ [ "s1" ] [ "s2" ] [ "s3" ] [ "a1" "a2" ] ] (plan ha).clusters.prod.provision)
  (case "provision waves without agents: servers one by one, no empty agent wave" [ [ "agent" ] [ "server" ] ] (plan (withMember base "dev" "agent" (m: m // { role = "server"; }))).clusters.dev.provision)
  (case "rollout: agents, other servers, first server last" [ "a1" "a2" "s2" "s3" "s1" ] (plan ha).clusters.prod.rollout)
  (case "rollout with firstServer s2 keeps it last" [ "a1" "a2" "s1" "s3" "s2" ]
    (plan (withCluster ha "prod" (c: c // { ha = c.ha // { firstServer = "s2"; }; }))).clusters.prod.rollout)
  (case "version upgrades roll servers first, agents after" [ "s2" "s3" "s1" "a1" "a2" ] (plan ha).clusters.prod.upgradeRollout)
  (case "server flags: node-ip, own bind address under keepalived, VIP as TLS SAN, networks, extra args"
    [ "--node-ip=10.1.0.12" "--bind-address=10.1.0.12" "--advertise-address=10.1.0.12" "--tls-san=10.1.0.100"
      "--cluster-cidr=10.42.0.0/16" "--service-cidr=10.43.0.0/16" "--cluster-dns=10.43.0.10"
      "--kube-apiserver-arg=authentication-config=/etc/nix8s/kube-apiserver-authentication.json" "--disable=traefik" ]
    (plan ha).clusters.prod.members.s2.k3s.flags)
  (case "agent flags: node-ip and agent extra args only" [ "--node-ip=10.1.0.21" "--node-label=tier=worker" ]
    (plan ha).clusters.prod.members.a1.k3s.flags)
  (case "an external load balancer keeps k3s on all addresses" [ "--node-ip=10.1.0.11" "--tls-san=10.1.0.100" "--cluster-cidr=10.42.0.0/16" "--service-cidr=10.43.0.0/16" "--cluster-dns=10.43.0.10"
      "--kube-apiserver-arg=authentication-config=/etc/nix8s/kube-apiserver-authentication.json" "--disable=traefik" ]
    (plan (withCluster ha "prod" (c: c // { ha = c.ha // { loadBalancer = "external"; }; }))).clusters.prod.members.s1.k3s.flags)
  (case "every member is reached at its ip as root on port 22 by default"
    { server = { host = "10.0.0.10"; port = 22; user = "root"; keyFile = null; }; agent = { host = "10.0.0.20"; port = 22; user = "root"; keyFile = null; }; }
    (let p = (plan base).clusters.dev.members; in { server = p.server.ssh; agent = p.agent.ssh; }))
  (case "provisioning.nixos-anywhere.ssh sets every member's port, user and key; null keeps a default"
    [ { host = "10.1.0.11"; port = 2222; user = "deploy"; keyFile = "/home/op/.ssh/nix8s"; } { host = "10.1.0.21"; port = 22; user = "root"; keyFile = null; } ]
    [ (plan (ha // { provisioning.nixos-anywhere.ssh = { port = 2222; user = "deploy"; keyFile = "/home/op/.ssh/nix8s"; }; })).clusters.prod.members.s1.ssh
      (plan (ha // { provisioning.nixos-anywhere.ssh = { port = null; user = null; }; })).clusters.prod.members.a1.ssh ])
  (case "without HA no tls-san and no bind address" [ "--node-ip=10.0.0.10" ] (plan base).clusters.dev.members.server.k3s.flags)
  (case "member mac: the override wins over the template, else the template, else null"
    [ "aa:bb:cc:dd:ee:02" "aa:bb:cc:dd:ee:01" null ]
    [ (plan base).clusters.dev.members.agent.mac (plan base).clusters.dev.members.server.mac (plan ha).clusters.prod.members.s1.mac ])
  (case "member overrides merge recursively into the template; lists are replaced"
    { install = { disk = "/dev/sdb"; swapSize = "8G"; }; boot.kernelParams = [ "b" ]; network.mac = "aa:bb:cc:dd:ee:01"; extensions = { monitoring.enable = true; zfs.enable = true; }; }
    (let c = {
        nodes.t = { network.mac = "aa:bb:cc:dd:ee:01"; install = { disk = "/dev/sda"; swapSize = "8G"; }; boot.kernelParams = [ "a" ]; extensions.monitoring.enable = false; };
        clusters.x.members.s = { node = "t"; role = "server"; ip = "10.0.0.1"; install.disk = "/dev/sdb"; boot.kernelParams = [ "b" ]; extensions = { monitoring.enable = true; zfs.enable = true; }; };
      }; in (plan c).clusters.x.members.s.config))
  (case "string and value node references give the same member"
    true
    (let
      t = { install.disk = "/dev/sda"; _nix8sName = "t"; };
      byName = (plan { nodes.t = t; clusters.x.members.s = { node = "t"; role = "server"; ip = "10.0.0.1"; }; }).clusters.x.members.s;
      byValue = (plan { nodes.t = t; clusters.x.members.s = { node = t; role = "server"; ip = "10.0.0.1"; }; }).clusters.x.members.s;
    in byName == byValue && byValue.node == "t"))
  (case "an inline node value without a name plans with node = null" null
    (plan { clusters.x.members.s = { node = { install.disk = "/dev/sda"; }; role = "server"; ip = "10.0.0.1"; }; }).clusters.x.members.s.node)
  (case "Nix-only values ride along but never enter the plan"
    { install.disk = "/dev/sda"; extra = { keep = 1; }; }
    (plan { nodes.t = { install.disk = "/dev/sda"; nixosModules = [ ({ ... }: { }) ]; extra = { keep = 1; fn = x: x; p = ./.; }; };
            clusters.x.members.s = { node = "t"; role = "server"; ip = "10.0.0.1"; }; }).clusters.x.members.s.config)
  (case "multi-cluster: each cluster plans from its own members only"
    { dev = [ "agent" "server" ]; prod = [ "a1" "a2" "s1" "s2" "s3" ]; devEndpoint = "https://10.0.0.10:6443"; prodEndpoint = "https://10.1.0.100:6443"; }
    (let p = plan (base // { nodes = base.nodes // ha.nodes; clusters = base.clusters // ha.clusters; }); in {
      dev = attrNames p.clusters.dev.members; prod = attrNames p.clusters.prod.members;
      devEndpoint = p.clusters.dev.apiEndpoint; prodEndpoint = p.clusters.prod.apiEndpoint; }))

  # ---- secrets ----------------------------------------------------------------------------------------------------------
  (case "default token files: servers get both, agents only the agent token"
    { server = { tokenFile = "/var/lib/nix8s/secrets/k3s-token"; agentTokenFile = "/var/lib/nix8s/secrets/k3s-agent-token"; };
      agent = { tokenFile = "/var/lib/nix8s/secrets/k3s-agent-token"; agentTokenFile = null; }; }
    (let p = (plan base).clusters.dev.members; in { server = { inherit (p.server.k3s) tokenFile agentTokenFile; }; agent = { inherit (p.agent.k3s) tokenFile agentTokenFile; }; }))
  (case "a user's single tokenFile serves agents too"
    [ "/run/secrets/k3s" "/run/secrets/k3s" null ]
    (let p = (plan (withCluster base "dev" (c: c // { secrets.tokenFile = "/run/secrets/k3s"; }))).clusters.dev.members; in
      [ p.server.k3s.tokenFile p.agent.k3s.tokenFile p.server.k3s.agentTokenFile ]))
  (case "no secret value appears in the plan, the NixOS data of file users, or the export"
    [ false false false ]
    (let
      cfg = withCluster base "dev" (c: c // { secrets = { token = "TOPSECRET-1"; agentToken = "TOPSECRET-2"; tokenFile = "/run/t"; agentTokenFile = "/run/a"; }; });
      has = v: builtins.match ".*TOPSECRET.*" (toJSON v) != null;
    in [ (has (plan cfg)) (has (core.exportable cfg)) (has (core.nixos (withCluster base "dev" (c: c // { secrets.tokenFile = "/run/t"; })))) ]))
  (case "a plain token is used by k3s only when given (with its warning)" "s3cret"
    (core.nixos (withCluster base "dev" (c: c // { secrets.token = "s3cret"; }))).dev-server.settings.services.k3s.token)
  (case "the export keeps token file paths" { tokenFile = "/run/t"; }
    (core.exportable (withCluster base "dev" (c: c // { secrets = { token = "x"; tokenFile = "/run/t"; }; }))).clusters.dev.secrets)
  (case "the export drops Nix-only values and names value references"
    { nodes.t = { install.disk = "/dev/sda"; }; clusters.x.members.s = { node = "t"; role = "server"; ip = "10.0.0.1"; }; }
    (let t = { install.disk = "/dev/sda"; nixosModules = [ ./. ]; _nix8sName = "t"; }; in
      core.exportable { nodes.t = t; clusters.x.members.s = { node = t; role = "server"; ip = "10.0.0.1"; }; }))

  # ---- NixOS data ----------------------------------------------------------------------------------------------------------
  (case "k3s service options come from the plan"
    { enable = true; role = "agent"; clusterInit = false; serverAddr = "https://10.1.0.100:6443"; extraFlags = [ "--node-ip=10.1.0.21" "--node-label=tier=worker" ];
      tokenFile = "/var/lib/nix8s/secrets/k3s-agent-token"; }
    (core.nixos ha).prod-a1.settings.services.k3s)
  (case "the first server sets no serverAddr" false ((core.nixos ha).prod-s1.settings.services.k3s ? serverAddr))
  (case "static address on eth0 with classic interface names when none is configured"
    { addrs = [ { address = "10.0.0.10"; prefixLength = 24; } ]; params = [ "net.ifnames=0" ]; }
    (let s = (core.nixos base).dev-server.settings; in { addrs = s.networking.interfaces.eth0.ipv4.addresses; params = s.boot.kernelParams; }))
  (case "a configured interface carries the address and keeps predictable names"
    { addrs = [ { address = "10.0.0.10"; prefixLength = 28; } ]; hasParams = false; gw = { address = "10.0.0.1"; interface = "enp1s0"; }; }
    (let s = (core.nixos (withCluster (base // { nodes.std = base.nodes.std // { network.interface = "enp1s0"; }; }) "dev"
      (c: c // { network = { prefixLength = 28; gateway = "10.0.0.1"; }; }))).dev-server.settings; in
      { addrs = s.networking.interfaces.enp1s0.ipv4.addresses; hasParams = s ? boot; gw = s.networking.defaultGateway; }))
  (case "firewall: servers open API, kubelet, etcd and flannel; agents kubelet and flannel"
    { server = { allowedTCPPorts = [ 6443 10250 ]; allowedUDPPorts = [ 8472 ]; allowedTCPPortRanges = [ { from = 2379; to = 2380; } ]; };
      agent = { allowedTCPPorts = [ 10250 ]; allowedUDPPorts = [ 8472 ]; }; }
    (let n = core.nixos base; in { server = n.dev-server.settings.networking.firewall; agent = n.dev-agent.settings.networking.firewall; }))
  (case "HA: haproxy and keepalived on servers only, backends are all server IPs"
    { s1 = true; a1 = false; backends = [ "  server s1 10.1.0.11:6443" "  server s2 10.1.0.12:6443" "  server s3 10.1.0.13:6443" ];
      bind = [ "  bind 10.1.0.100:6443" ]; nonlocal = 1; }
    (let n = core.nixos ha; lines = filter builtins.isString (builtins.split "\n" n.prod-s2.settings.services.haproxy.config); in {
      s1 = n.prod-s1.settings.services.haproxy.enable && n.prod-s1.settings.services.keepalived.enable;
      a1 = n.prod-a1.settings.services ? haproxy || n.prod-a1.settings.services ? keepalived;
      backends = filter (l: builtins.match "  server .*" l != null) lines;
      bind = filter (l: builtins.match "  bind .*" l != null) lines;
      nonlocal = n.prod-s2.settings.boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind"; }))
  (case "keepalived: first server is MASTER, unicast peers are the other servers, VIP with prefix"
    { state = "MASTER"; priority = 150; peers = [ "10.1.0.12" "10.1.0.13" ]; vips = [ { addr = "10.1.0.100/24"; } ]; backup = "BACKUP"; }
    (let n = core.nixos ha; i = n.prod-s1.settings.services.keepalived.vrrpInstances.k3s-prod; in {
      inherit (i) state priority; peers = i.unicastPeers; vips = i.virtualIps;
      backup = n.prod-s3.settings.services.keepalived.vrrpInstances.k3s-prod.state; }))
  (case "simple disk mode: GPT, 512M ESP vfat on /boot, optional swap, ext4 root"
    { esp = { size = "512M"; type = "EF00"; fs = "vfat"; mount = "/boot"; }; swap = "16G"; root = { size = "100%"; fs = "ext4"; mount = "/"; }; device = "/dev/sda"; }
    (let d = (core.nixos (base // { nodes.std = base.nodes.std // { install = { disk = "/dev/sda"; swapSize = "16G"; }; }; })).dev-server.settings.disko.devices.disk.main;
         p = d.content.partitions; in {
      esp = { inherit (p.ESP) size type; fs = p.ESP.content.format; mount = p.ESP.content.mountpoint; };
      swap = p.swap.size; root = { inherit (p.root) size; fs = p.root.content.format; mount = p.root.content.mountpoint; }; inherit (d) device; }))
  (case "custom disko mode passes devices through" { zpool.rpool.type = "zpool"; }
    (core.nixos { nodes.z.disko.devices.zpool.rpool.type = "zpool"; clusters.x.members.s = { node = "z"; role = "server"; ip = "10.0.0.1"; }; }).x-s.settings.disko.devices)
  (case "zfs gets a stable 8-hex-digit hostId derived from the member" { fs = [ "zfs" ]; id = builtins.substring 0 8 (builtins.hashString "sha256" "x-s"); }
    (let s = (core.nixos { nodes.z = { install.disk = "/dev/sda"; extensions.zfs.enable = true; }; clusters.x.members.s = { node = "z"; role = "server"; ip = "10.0.0.1"; }; }).x-s.settings; in
      { fs = s.boot.supportedFilesystems; id = s.networking.hostId; }))
  (case "extensions only where enabled: monitoring on the member that overrides it"
    { s = true; a = false; }
    (let n = core.nixos (withMember base "dev" "server" (m: m // { extensions.monitoring.enable = true; })); in
      { s = n.dev-server.settings.services.prometheus.exporters.node.enable; a = n.dev-agent.settings.services ? prometheus; }))
  # ---- HA and networking on the nodes (issue 9): health checks, keepalived script security, flannel ports -----------
  (case "haproxy puts a server in the pool only once GET /readyz answers 200 over TLS, checked every 2 s"
    [ "  option httpchk" "  http-check send meth GET uri /readyz" "  http-check expect status 200"
      "  default-server check check-ssl verify none inter 2s fall 3 rise 2" ]
    (let lines = filter builtins.isString (builtins.split "\n" (core.nixos ha).prod-s1.settings.services.haproxy.config); in
      filter (l: builtins.match "  (option httpchk|http-check|default-server).*" l != null) lines))
  (case "HA servers answer /readyz, /livez and /healthz anonymously through an authentication config, nothing else"
    { flag = true; file = "nix8s/kube-apiserver-authentication.json"; agentHasFile = false;
      config = { apiVersion = "apiserver.config.k8s.io/v1beta1"; kind = "AuthenticationConfiguration";
        anonymous = { enabled = true; conditions = [ { path = "/readyz"; } { path = "/livez"; } { path = "/healthz"; } ]; }; }; }
    (let n = core.nixos ha; etc = n.prod-s2.settings.environment.etc; in {
      flag = builtins.elem "--kube-apiserver-arg=authentication-config=/etc/${head (attrNames etc)}" (plan ha).clusters.prod.members.s2.k3s.flags;
      file = head (attrNames etc); config = builtins.fromJSON etc.${head (attrNames etc)}.text;
      agentHasFile = n.prod-a1.settings ? environment; }))
  (case "an external load balancer gets the anonymous health endpoints too; a single server without a VIP does not"
    { external = true; single = false; singleFlags = [ "--node-ip=10.0.0.10" ]; }
    { external = (plan (withCluster ha "prod" (c: c // { ha = c.ha // { loadBalancer = "external"; }; }))).clusters.prod.apiServerAuthentication != null;
      single = (plan base).clusters.dev.apiServerAuthentication != null;
      singleFlags = (plan base).clusters.dev.members.server.k3s.flags; })
  (case "a user's own authentication config or --anonymous-auth replaces nix8s' (their settings must allow the check)"
    [ [ "--kube-apiserver-arg=authentication-config=/etc/mine.yaml" ] [ "--kube-apiserver-arg" "anonymous-auth=true" ] ]
    (map (args: let p = (plan (withCluster ha "prod" (c: c // { k3s = c.k3s // { extraArgs.server = args; }; }))).clusters.prod; in
      assert p.apiServerAuthentication == null; filter (f: builtins.match ".*(authentication-config|anonymous-auth).*" f != null || f == "--kube-apiserver-arg") p.members.s1.k3s.flags)
      [ [ "--kube-apiserver-arg=authentication-config=/etc/mine.yaml" ] [ "--kube-apiserver-arg" "anonymous-auth=true" ] ]))
  (case "keepalived: script security on, the haproxy track script in the instance's extraConfig (not trackScripts)"
    { security = true; extra = "track_script {\n  nix8s-haproxy\n}\n"; trackScripts = false; }
    (let k = (core.nixos ha).prod-s3.settings.services.keepalived; i = k.vrrpInstances.k3s-prod; in
      { security = k.enableScriptSecurity; extra = i.extraConfig; trackScripts = i ? trackScripts; }))
  (case "the flannel backend is decided per cluster from the servers' flags (the last one wins, both flag forms)"
    [ "vxlan" "wireguard-native" "host-gw" "wireguard-native" ]
    (map (args: (plan (withCluster ha "prod" (c: c // { k3s = c.k3s // { extraArgs.server = args; }; }))).clusters.prod.flannelBackend)
      [ [ ] [ "--flannel-backend=wireguard-native" ] [ "--flannel-backend" "host-gw" ] [ "--flannel-backend=host-gw" "--flannel-backend=wireguard-native" ] ]))
  (case "wireguard-native: agents open UDP 51820/51821 like the servers, and no VXLAN port"
    { s1 = [ 51820 51821 ]; a1 = [ 51820 51821 ]; a2 = [ 51820 51821 ]; }
    (let n = core.nixos (withCluster ha "prod" (c: c // { k3s = c.k3s // { extraArgs.server = [ "--flannel-backend=wireguard-native" ]; }; })); in
      { s1 = n.prod-s1.settings.networking.firewall.allowedUDPPorts; a1 = n.prod-a1.settings.networking.firewall.allowedUDPPorts;
        a2 = n.prod-a2.settings.networking.firewall.allowedUDPPorts; }))
  (case "host-gw and none open no flannel port; vxlan opens UDP 8472 on every member"
    { hostgw = [ [ ] [ ] ]; none = [ [ ] [ ] ]; vxlan = [ [ 8472 ] [ 8472 ] ]; }
    (let ports = args: let n = core.nixos (withCluster base "dev" (c: c // { k3s = c.k3s // { extraArgs.server = args; }; })); in
      map (m: n.${m}.settings.networking.firewall.allowedUDPPorts) [ "dev-server" "dev-agent" ]; in
      { hostgw = ports [ "--flannel-backend=host-gw" ]; none = ports [ "--flannel-backend=none" ]; vxlan = ports [ ]; }))
  # ---- PXE view ----------------------------------------------------------------------------------------------------------
  (case "pxe: machines by MAC with their member, role, plan ip and provision wave; proxy mode by default"
    { errors = [ ]; warnings = [ ]; unmatched = [ ];
      server = { ip = "10.1.0.1"; interface = null; mode = "proxy"; subnet = "10.1.0.0/24"; rangeStart = null; rangeEnd = null; gateway = null; approve = "servers"; };
      machines = [
        { mac = "aa:00:00:00:00:01"; cluster = "prod"; member = "s1"; hostName = "prod-s1"; role = "server"; ip = "10.1.0.11"; wave = 0; }
        { mac = "aa:00:00:00:00:02"; cluster = "prod"; member = "s2"; hostName = "prod-s2"; role = "server"; ip = "10.1.0.12"; wave = 1; }
        { mac = "aa:00:00:00:00:03"; cluster = "prod"; member = "s3"; hostName = "prod-s3"; role = "server"; ip = "10.1.0.13"; wave = 2; }
        { mac = "aa:00:00:00:00:21"; cluster = "prod"; member = "a1"; hostName = "prod-a1"; role = "agent"; ip = "10.1.0.21"; wave = 3; }
        { mac = "aa:00:00:00:00:22"; cluster = "prod"; member = "a2"; hostName = "prod-a2"; role = "agent"; ip = "10.1.0.22"; wave = 3; } ]; }
    (core.pxe (withCluster (ha // { provisioning.pxe.server = { ip = "10.1.0.1"; dhcp.subnet = "10.1.0.0/24"; }; }) "prod" (c: c // {
      members = builtins.mapAttrs (n: m: m // { network.mac = { s1 = "AA:00:00:00:00:01"; s2 = "aa:00:00:00:00:02"; s3 = "aa:00:00:00:00:03"; a1 = "aa:00:00:00:00:21"; a2 = "aa:00:00:00:00:22"; }.${n}; }) c.members; })) null))
  (case "pxe: ha.firstServer boots in the first wave, the wave comes from the plan"
    { s1 = 1; s2 = 0; s3 = 2; }
    (let cfg = withCluster (ha // { provisioning.pxe.server.ip = "10.1.0.1"; }) "prod" (c: c // { ha = c.ha // { firstServer = "s2"; };
      members = builtins.mapAttrs (n: m: m // { network.mac = "aa:00:00:00:00:${if builtins.substring 0 1 n == "s" then "1" else "2"}${builtins.substring 1 1 n}"; }) c.members; });
      ms = (core.pxe cfg null).machines;
      waveOf = n: head (catAttrs "wave" (filter (m: m.member == n) ms));
    in { s1 = waveOf "s1"; s2 = waveOf "s2"; s3 = waveOf "s3"; }))
  (case "pxe: full mode hands out the range, subnet and gateway"
    { ip = "10.0.0.1"; interface = "eth0"; mode = "full"; subnet = "10.0.0.0/24"; rangeStart = "10.0.0.100"; rangeEnd = "10.0.0.200"; gateway = "10.0.0.254"; approve = "servers"; }
    (core.pxe (withPxe { ip = "10.0.0.1"; interface = "eth0"; dhcp = { mode = "full"; subnet = "10.0.0.0/24"; range = "10.0.0.100-10.0.0.200"; gateway = "10.0.0.254"; }; }) null).server)
  (case "pxe: secrets wait for approval of servers unless provisioning.pxe.approve says otherwise"
    { default = "servers"; all = "all"; none = "none"; }
    { default = (core.pxe pxeBase null).server.approve;
      all = (core.pxe (pxeBase // { provisioning = pxeBase.provisioning // { pxe = pxeBase.provisioning.pxe // { approve = "all"; }; }; }) null).server.approve;
      none = (core.pxe (pxeBase // { provisioning = pxeBase.provisioning // { pxe = pxeBase.provisioning.pxe // { approve = "none"; }; }; }) null).server.approve; })
  (case "pxe: an unknown approve setting is an error at its path, naming the three settings"
    [ { path = "provisioning.pxe.approve"; message = "\"always\" is not an approval setting; use \"servers\" (the default: a network-installed server gets its secrets only after POST /v1/machines/{mac}/approve confirms its host key), \"all\" (every member waits for that) or \"none\" (secrets go to whichever host key the installer reports)"; } ]
    (core.pxe (pxeBase // { provisioning = pxeBase.provisioning // { pxe = pxeBase.provisioning.pxe // { approve = "always"; }; }; }) null).errors)
  (case "pxe: the base config serves both members" [ [ ] [ "aa:bb:cc:dd:ee:01" "aa:bb:cc:dd:ee:02" ] ]
    (let r = core.pxe pxeBase [ "dev" ]; in [ r.errors (catAttrs "mac" r.machines) ]))
  (case "pxe: members sharing a MAC are validate's error, reported once, and nothing is served"
    { errors = [ "clusters.dev.members.server.network.mac" ]; warnings = [ ]; machines = [ ]; }
    (let r = core.pxe (withMember pxeBase "dev" "agent" (m: m // { network.mac = "AA:BB:CC:DD:EE:01"; })) null; in
      { errors = catAttrs "path" r.errors; warnings = catAttrs "path" r.warnings; inherit (r) machines; }))
  (case "pxe: a MAC shared with a cluster that is not served is an error too (a MAC names one machine)"
    [ "clusters.other.members.server.network.mac" ]
    (pxeErrors (withCluster pxeBase "other" (_: { members.server = { node = "std"; role = "server"; ip = "10.0.0.30"; }; })) [ "dev" ]))
  (case "pxe: a served member without a MAC is unmatched (not an error: a discovered machine may be assigned to it), naming the field and the alternatives"
    [ [ { path = "clusters.dev.members.server.network.mac"; message = "is missing; the PXE server boots members by MAC: set clusters.dev.members.server.network.mac (or network.mac on its node template), assign a discovered machine to it (POST /v1/machines/{mac}/assign), or install it with nixos-anywhere (nix8s install) instead"; } ] [ ] ]
    (let r = core.pxe (pxeBase // { nodes.std = removeAttrs base.nodes.std [ "network" ]; }) null; in [ r.unmatched r.errors ]))
  (case "pxe: members of clusters that are not served need no MAC" [ ]
    (pxeErrors (withCluster pxeBase "other" (_: { members.s = { node = { install.disk = "/dev/sda"; }; role = "server"; ip = "10.0.0.30"; }; })) [ "dev" ]))
  (case "pxe: a member's plan ip outside dhcp.subnet"
    [ "clusters.dev.members.agent.ip" "\"10.0.1.20\" is outside provisioning.pxe.server.dhcp.subnet \"10.0.0.0/24\", the network the PXE server boots; give the member an address inside it or fix the subnet" ]
    (let c = withMember pxeBase "dev" "agent" (m: m // { ip = "10.0.1.20"; }); in [ (head (pxeErrors c null)) (pxeMessageOf c "clusters.dev.members.agent.ip") ]))
  (case "pxe: without dhcp.subnet member ips are not checked" [ ]
    (pxeErrors (withMember (withPxe { ip = "10.0.0.1"; }) "dev" "agent" (m: m // { ip = "192.168.7.20"; })) null))
  (case "pxe: the server's ip is required"
    [ { path = "provisioning.pxe.server.ip"; message = "is missing; the PXE server needs the address it serves from (DHCP next-server, TFTP and HTTP): set it to an address of provisioning.pxe.server.interface"; } ]
    (core.pxe base null).errors)
  (case "pxe: the server's ip must be inside dhcp.subnet"
    [ "provisioning.pxe.server.ip" "\"10.9.0.1\" is outside dhcp.subnet \"10.0.0.0/24\"; the server must be on the network it boots: set ip to its address there, or fix the subnet" ]
    (let c = withPxe { ip = "10.9.0.1"; dhcp.subnet = "10.0.0.0/24"; }; in [ (head (pxeErrors c null)) (pxeMessageOf c "provisioning.pxe.server.ip") ]))
  (case "pxe: the config's own errors come first and nothing is served"
    { errors = [ "provisioning.pxe.server.dhcp.range" "provisioning.pxe.server.dhcp.subnet" "provisioning.pxe.server.ip" ]; machines = [ ]; }
    (let r = core.pxe (withPxe { dhcp.mode = "full"; }) null; in { errors = catAttrs "path" r.errors; inherit (r) machines; }))
  (case "pxe: an invalid mode is an error, not proxy"
    [ "provisioning.pxe.server.dhcp.mode" ] (pxeErrors (withPxe { ip = "10.0.0.1"; dhcp.mode = "dhcp"; }) null))
  (case "pxe: a served cluster that does not exist lists the known ones"
    [ { path = "clusters.prod"; message = "\"prod\" is not a cluster of the config, so the PXE server cannot serve it; known clusters: \"dev\""; } ]
    (core.pxe pxeBase [ "dev" "prod" ]).errors)
  (case "pxe: an empty list serves nothing, a cluster named twice is served once" [ [ ] [ "dev" "dev" ] ]
    [ (core.pxe pxeBase [ ]).machines (catAttrs "cluster" (core.pxe pxeBase [ "dev" "dev" ]).machines) ])
  (case "pxe: an invalid member config is reported by validate, not planned" { errors = [ "clusters.dev.members.agent.role" ]; machines = [ ]; }
    (let r = core.pxe (withMember pxeBase "dev" "agent" (m: m // { role = "boss"; })) null; in { errors = catAttrs "path" r.errors; inherit (r) machines; }))

  # ---- Cozystack (lib/cozystack.nix, docs/cozystack.md) ------------------------------------------------------------
  (case "cozystack: a cluster with a domain and k3s v1.34 is valid; the operator manifest's missing hash is a warning saying how to pin it"
    { errors = [ ]; warnings = [ "clusters.dev.cozystack.manifests.operator" ]; prefetch = true; }
    (let r = core.validate cozy; m = (head r.warnings).message; in {
      inherit (r) errors; warnings = catAttrs "path" r.warnings;
      prefetch = builtins.match ".*`nix store prefetch-file --json https://github.com/cozystack/cozystack/releases/download/v1.6.2/cozystack-operator-generic.yaml`.*nix-prefetch-url.*clusters.dev.cozystack.manifests = \\{ crds = \\{ url = .*" m != null; }))
  (case "cozystack: pinned manifests leave no warning" { errors = [ ]; warnings = [ ]; }
    (core.validate (withCozy (z: z // { manifests = { crds = { url = "https://x/c.yaml"; hash = "sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; }; operator = { url = "https://x/o.yaml"; hash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="; }; }; }))))
  (case "cozystack: a k3s older than v1.32 is an error at k3s.version naming cozystack.enable"
    [ "clusters.dev.k3s.version" "Cozystack needs k3s v1.32 or newer (clusters.dev.cozystack.enable); got \"v1.31.0+k3s1\", set a newer release such as \"v1.34.2+k3s1\"" ]
    (let c = withK3s (k: k // { version = "v1.31.0+k3s1"; }); in [ (head (errorPaths c)) (messageOf c "clusters.dev.k3s.version") ]))
  (case "cozystack: k3s v1.32.0 is new enough" [ ] (errorPaths (withK3s (k: k // { version = "v1.32.0+k3s1"; }))))
  (case "cozystack: no k3s version is a warning (the NixOS default cannot be checked)" [ "clusters.dev.k3s.version" "clusters.dev.cozystack.manifests.operator" ]
    (warningPaths (withK3s (k: removeAttrs k [ "version" ]))))
  (case "cozystack: a server flag contradicting Cozystack's is an error at the flag naming cozystack.enable"
    [ { path = "clusters.dev.k3s.extraArgs.server.1"; message = "contradicts clusters.dev.cozystack.enable: Cozystack needs --flannel-backend=none (its network is Kube-OVN with Cilium), got --flannel-backend=vxlan; remove the flag"; } ]
    (core.validate (withK3s (k: k // { extraArgs.server = [ "--disable=traefik" "--flannel-backend=vxlan" ]; }))).errors)
  (case "cozystack: the two-word form of a flag is read too"
    [ "clusters.dev.k3s.extraArgs.server.0" ]
    (errorPaths (withK3s (k: k // { extraArgs.server = [ "--cluster-domain" "cluster.local" ]; }))))
  (case "cozystack: turning off a switch Cozystack needs is an error; on servers and agents"
    [ "clusters.dev.k3s.extraArgs.server.0" "clusters.dev.k3s.extraArgs.agent.0" ]
    (errorPaths (withK3s (k: k // { extraArgs = { server = [ "--disable-kube-proxy=false" ]; agent = [ "--nonroot-devices=false" ]; }; }))))
  (case "cozystack: max-pods in extraArgs points to cozystack.maxPods"
    [ "clusters.dev.k3s.extraArgs.agent.0" "contradicts clusters.dev.cozystack.enable: Cozystack sets max-pods from clusters.dev.cozystack.maxPods (220); set it there instead of --kubelet-arg=max-pods=110" ]
    (let c = withK3s (k: k // { extraArgs.agent = [ "--kubelet-arg=max-pods=110" ]; }); in [ (head (errorPaths c)) (messageOf c "clusters.dev.k3s.extraArgs.agent.0") ]))
  (case "cozystack: flags that agree with Cozystack's are fine and not repeated"
    { errors = [ ]; flags = [ "--node-ip=10.0.0.10" "--flannel-backend=none" "--disable-network-policy" "--disable-kube-proxy" "--disable=servicelb" "--disable=local-storage" "--disable=metrics-server" "--cluster-domain=cozy.local" "--cluster-cidr=10.42.0.0/16" "--service-cidr=10.43.0.0/16" "--kubelet-arg=max-pods=220" "--nonroot-devices" "--disable=traefik" ]; }
    (let c = withK3s (k: k // { extraArgs.server = [ "--disable=traefik" ]; }); in { errors = errorPaths c; flags = (cozyPlan c).members.server.k3s.flags; }))
  (case "cozystack: a --cluster-cidr that differs from k3s.network points there"
    [ "contradicts clusters.dev.cozystack.enable: the platform Package takes the clusterCidr from clusters.dev.k3s.network.clusterCidr (10.42.0.0/16); set it there instead of --cluster-cidr=10.52.0.0/16" ]
    (messages (withK3s (k: k // { extraArgs.server = [ "--cluster-cidr=10.52.0.0/16" ]; }))))
  (case "cozystack: a publishing host is required: domain or cozystack.host"
    [ "clusters.dev.cozystack.host" "Cozystack needs a publishing host (its dashboard and APIs are served under it): set clusters.dev.domain or clusters.dev.cozystack.host, such as \"k8s.example.com\"" ]
    (let c = withCluster cozy "dev" (c: removeAttrs c [ "domain" ]); in [ (head (errorPaths c)) (messageOf c "clusters.dev.cozystack.host") ]))
  (case "cozystack: a host that is an IP or not a DNS name is refused where it is set"
    [ [ "clusters.dev.cozystack.host" ] [ "clusters.dev.domain" ] ]
    [ (errorPaths (withCozy (z: z // { host = "10.0.0.5"; }))) (errorPaths (withCluster cozy "dev" (c: c // { domain = "Not_A_Name"; }))) ])
  (case "cozystack: a release without pinned manifests needs cozystack.manifests"
    [ "clusters.dev.cozystack.version" "no pinned manifests for \"v1.5.4\" (known: \"v1.6.2\"); set cozystack.manifests.crds and .operator to { url; hash; }" ]
    (let c = withCozy (z: z // { version = "v1.5.4"; }); in [ (head (errorPaths c)) (messageOf c "clusters.dev.cozystack.version") ]))
  (case "cozystack: a release before v1.0.0 and a malformed one are refused" [ [ "clusters.dev.cozystack.version" ] [ "clusters.dev.cozystack.version" ] ]
    (map (version: errorPaths (withCozy (z: z // { inherit version; manifests = { crds = { url = "https://x/c.yaml"; hash = "sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; }; operator = { url = "https://x/o.yaml"; hash = "sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; }; }; }))) [ "v0.41.0" "1.6" ]))
  (case "cozystack: manifests need both files, each with an URL and an SRI hash"
    [ "clusters.dev.cozystack.manifests.crds.hash" "clusters.dev.cozystack.manifests.operator" ]
    (errorPaths (withCozy (z: z // { manifests.crds = { url = "https://example.org/crds.yaml"; hash = "af8d7589"; }; }))))
  (case "cozystack: overridden manifests replace the pinned ones in the plan"
    { crds = { url = "https://mirror.example/c.yaml"; hash = "sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; }; operator = { url = "https://mirror.example/o.yaml"; hash = "sha256-AAAAiVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; }; placeholder = "REPLACE_ME"; }
    (cozyPlan (withCozy (z: z // { manifests = { crds = { url = "https://mirror.example/c.yaml"; hash = "sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; }; operator = { url = "https://mirror.example/o.yaml"; hash = "sha256-AAAAiVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; }; }; }))).cozystack.manifests)
  (case "cozystack: v1.6.2's CRDs are pinned by hash; its operator manifest has none (not computable offline)"
    { crds = "sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; operator = null; }
    (let m = (cozyPlan cozy).cozystack.manifests; in { crds = m.crds.hash; operator = m.operator.hash; }))
  (case "cozystack: the join network must not overlap the pod network"
    [ "clusters.dev.cozystack.network.joinCidr" "\"10.42.128.0/17\" overlaps the pod network \"10.42.0.0/16\" (clusters.dev.k3s.network.clusterCidr); pick a free range such as \"100.64.0.0/16\"" ]
    (let c = withCozy (z: z // { network.joinCidr = "10.42.128.0/17"; }); in [ (head (errorPaths c)) (messageOf c "clusters.dev.cozystack.network.joinCidr") ]))
  (case "cozystack: a member address inside the pod network is an error at k3s.network.clusterCidr"
    [ "clusters.dev.k3s.network.clusterCidr" ]
    (errorPaths (withK3s (k: k // { network.clusterCidr = "10.0.0.0/16"; }))))
  (case "cozystack: bad maxPods, externalIPs, bootstrapTimeout and an unknown key, each at its path"
    [ "clusters.dev.cozystack.maxPod" "clusters.dev.cozystack.maxPods" "clusters.dev.cozystack.externalIPs.1" "clusters.dev.cozystack.bootstrapTimeout" ]
    (errorPaths (withCozy (z: z // { maxPods = 0; maxPod = 3; externalIPs = [ "10.0.0.50" "x" ]; bootstrapTimeout = "45 minutes"; }))))
  (case "cozystack: DRBD switched off on a node template is an error there"
    [ "nodes.std.extensions.drbd.enable" "contradicts clusters.dev.cozystack.enable: Cozystack needs DRBD 9 on every member (LINSTOR's satellites run on all nodes); remove the setting" ]
    (let c = cozy // { nodes.std = cozy.nodes.std // { extensions.drbd.enable = false; }; }; in [ (head (errorPaths c)) (messageOf c "nodes.std.extensions.drbd.enable") ]))
  (case "cozystack: cozystack that is not an attribute set, or enable that is not a bool" [ [ "clusters.dev.cozystack" ] [ "clusters.dev.cozystack.enable" ] ]
    [ (errorPaths (withCluster cozy "dev" (c: c // { cozystack = true; }))) (errorPaths (withCozy (z: z // { enable = "yes"; }))) ])
  (case "cozystack: an even number of servers is a warning (OVN's raft)" [ "clusters.dev.ha.enable" "clusters.dev.members" "clusters.dev.cozystack.manifests.operator" ]
    (warningPaths (withMember cozy "dev" "agent" (m: m // { role = "server"; }))))
  (case "cozystack: off, the plan has no cozystack part and the flags are unchanged"
    { cozystack = null; flannel = "vxlan"; agent = [ "--node-ip=10.0.0.20" ]; }
    (let p = (plan base).clusters.dev; in { inherit (p) cozystack; flannel = p.flannelBackend; agent = p.members.agent.k3s.flags; }))
  (case "cozystack: agents get max-pods and nonroot devices; flannel is none"
    { agent = [ "--node-ip=10.0.0.20" "--kubelet-arg=max-pods=300" "--nonroot-devices" ]; flannel = "none"; }
    (let p = cozyPlan (withCozy (z: z // { maxPods = 300; })); in { agent = p.members.agent.k3s.flags; flannel = p.flannelBackend; }))
  (case "cozystack: an API endpoint other than the cluster's goes into the servers' certificate, with a warning"
    { tlsSan = [ "--tls-san=api.cozy.example.com" ]; warnings = [ "clusters.dev.cozystack.apiServerEndpoint" "clusters.dev.cozystack.manifests.operator" ]; }
    (let c = withCozy (z: z // { apiServerEndpoint = "https://api.cozy.example.com:6443"; }); in
      { tlsSan = filter (f: builtins.match "--tls-san=.*" f != null) (cozyPlan c).members.server.k3s.flags; warnings = warningPaths c; }))
  (case "cozystack: the platform Package comes from the cluster's networks: VIP, servers, pod gateway"
    { apiServerEndpoint = "https://10.1.0.100:6443"; host = "prod.example.com"; }
    (core.plan (withCluster ha "prod" (c: c // { k3s = c.k3s // { version = "v1.34.2+k3s1"; }; cozystack = { enable = true; host = "prod.example.com"; }; }))).clusters.prod.cozystack.package.spec.components.platform.values.publishing)
  (case "cozystack: networking values of the Package"
    { clusterDomain = "cozy.local"; podCIDR = "10.52.0.0/16"; podGateway = "10.52.0.1"; serviceCIDR = "10.53.0.0/16"; joinCIDR = "100.64.0.0/16"; kubeovn.MASTER_NODES = "10.1.0.11,10.1.0.12,10.1.0.13"; }
    ((core.plan (withCluster ha "prod" (c: c // { k3s = c.k3s // { version = "v1.34.2+k3s1"; network = { clusterCidr = "10.52.0.0/16"; serviceCidr = "10.53.0.0/16"; }; }; cozystack = { enable = true; host = "prod.example.com"; }; }))).clusters.prod.cozystack.package.spec.components.platform.values.networking))
  (case "cozystack: members open Cozystack's ports and not flannel's; servers OVN's databases too"
    { agentTCP = [ 10250 3366 3367 4240 10665 ]; agentUDP = [ 6081 ]; serverTCP = [ 6443 10250 3366 3367 4240 10665 6641 6642 6643 6644 10660 10661 ]; agentRanges = [ { from = 7000; to = 7999; } ]; }
    (let n = core.nixos cozy; in {
      agentTCP = n.dev-agent.settings.networking.firewall.allowedTCPPorts; agentUDP = n.dev-agent.settings.networking.firewall.allowedUDPPorts;
      serverTCP = n.dev-server.settings.networking.firewall.allowedTCPPorts; agentRanges = n.dev-agent.settings.networking.firewall.allowedTCPPortRanges; }))
  (case "cozystack: kvm module by CPU vendor only, after the user's modules; NFS beside ZFS"
    { modules = [ "vfio" "br_netfilter" "overlay" "openvswitch" "geneve" "ip_tables" "iptable_nat" "vhost_net" "tun" "dm_thin_pool" "dm_snapshot" "kvm-amd" ]; fs = [ "zfs" "nfs" ]; }
    (let n = (core.nixos (cozy // { nodes.std = cozy.nodes.std // { boot.kernelModules = [ "vfio" ]; hardware.cpu.vendor = "amd"; extensions.zfs.enable = true; }; })).dev-agent.settings.boot; in
      { modules = n.kernelModules; fs = n.supportedFilesystems; }))
  (case "cozystack: node preparation: iSCSI name, multipath's drbd blacklist, LVM filter, tmpfiles"
    { iqn = "iqn.2005-03.org.nixos:dev-agent"; blacklist = "devnode \"^drbd[0-9]+\""; lvm = "devices/global_filter = [ \"r|^/dev/drbd.*|\", \"r|^/dev/dm-.*|\", \"r|^/dev/zd.*|\", \"r|^/dev/loop.*|\" ]\n"; tmpfiles = [ "d /lib/modules 0755 root root -" "d /usr/src 0755 root root -" ]; swappiness = 1; }
    (let s = (core.nixos cozy).dev-agent; in {
      iqn = s.settings.services.openiscsi.name; blacklist = s.settings.services.multipath.blacklist; lvm = s.settings.environment.etc."lvm/lvm.conf".text;
      tmpfiles = s.settings.systemd.tmpfiles.rules; swappiness = s.defaults.boot.kernel.sysctl."vm.swappiness"; }))

  # checkJSON is check for configs parsed from JSON (the Go tools'): the same report and plan, every example.
  (case "checkJSON gives check's result for every example" true
    (builtins.all (ex: let cfg = builtins.fromJSON (builtins.toJSON (import (../examples + "/${ex}/config.nix"))); in
      core.checkJSON cfg == core.check cfg) [ "minimal" "ha" "multi-cluster" "lima" "cozystack" ]))
  (case "checkJSON reports the same errors as check" true
    (let cfg = { clusters.dev.members.s = { node = "nope"; role = "boss"; ip = "1"; network.mac = "x"; }; }; in
      core.checkJSON cfg == core.check cfg))

  # checkStored: the inventory nix8sd stores. Secret values, a warning in a flake, are errors there, with the fix.
  (case "checkStored refuses a secret value that checkJSON only warns about"
    { json = { errors = [ ]; warnings = [ "clusters.dev.secrets.agentToken" "clusters.dev.secrets.token" ]; hasPlan = true; };
      stored = { errors = [ "clusters.dev.secrets.token" "clusters.dev.secrets.agentToken" ]; warnings = [ ]; hasPlan = false; };
      message = "nix8sd does not store secret values (any read token reads the inventory, and it is rendered into a flake workspace): keep the cluster token in a file on the node and set secrets.tokenFile to its path (sops-nix, agenix), or remove secrets.token and let nix8s generate and deliver the tokens (nix8s gen-secrets)"; }
    (let
      cfg = withCluster base "dev" (c: c // { secrets = { token = "s3cret"; agentToken = "s3cret2"; }; });
      summary = r: { errors = catAttrs "path" r.report.errors; warnings = builtins.sort builtins.lessThan (catAttrs "path" r.report.warnings); hasPlan = r ? plan; };
    in { json = summary (core.checkJSON cfg); stored = summary (core.checkStored cfg); message = (head (core.checkStored cfg).report.errors).message; }))
  (case "checkStored gives checkJSON's result for every example without secret values" true
    (builtins.all (ex: let cfg = builtins.fromJSON (builtins.toJSON (import (../examples + "/${ex}/config.nix"))); in
      core.checkStored cfg == core.checkJSON cfg) [ "minimal" "ha" "multi-cluster" "lima" ]))
  (case "checkStored keeps checkJSON's other errors and warnings"
    { errors = [ "clusters.dev.members.agent.role" "clusters.dev.secrets.token" ]; warnings = [ "nodes.std.extensions.gpu" ]; json = [ "clusters.dev.members.agent.role" ]; }
    (let
      cfg = withMember (withCluster (base // { nodes.std = base.nodes.std // { extensions.gpu = { }; }; }) "dev" (c: c // { secrets.token = "s"; })) "dev" "agent" (m: m // { role = "boss"; });
      r = (core.checkStored cfg).report;
    in { errors = builtins.sort builtins.lessThan (catAttrs "path" r.errors); warnings = catAttrs "path" r.warnings; json = catAttrs "path" (core.checkJSON cfg).report.errors; }))
]
