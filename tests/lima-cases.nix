# Eval tests of provisioning.lima (lib/lima.nix), in cases.nix's form ({ name; expected; actual; }), compared by
# tests/lima_test.go. Each case changes one thing of `dev`, a two-member Lima cluster on 192.168.107.0/24.
let
  core = import ../lib;
  inherit (builtins) catAttrs filter head map;

  dev = {
    nodes.vm.install.disk = "/dev/vda";
    clusters.dev = {
      k3s.version = "v1.34.2+k3s1";
      members = {
        server = { node = "vm"; role = "server"; ip = "192.168.107.10"; };
        agent = { node = "vm"; role = "agent"; ip = "192.168.107.20"; };
      };
    };
    provisioning.lima = { network = "192.168.107.0/24"; };
  };
  withLima = l: dev // { provisioning.lima = l; };
  withIP = ip: dev // { clusters.dev = dev.clusters.dev // { members = dev.clusters.dev.members // { agent = dev.clusters.dev.members.agent // { inherit ip; }; }; }; };
  two = dev // { clusters = dev.clusters // { prod = dev.clusters.dev; }; };

  errors = cfg: (core.validate cfg).errors;
  errorAt = cfg: path: map (e: e.message) (filter (e: e.path == path) (errors cfg));
  view = cfg: c: core.lima cfg c;
  case = name: expected: actual: { inherit name expected actual; };
in [
  (case "a Lima cluster with only a network is valid" { errors = [ ]; warnings = [ ]; } (core.validate dev))

  (case "the view gives each member its instance, address, wave and Lima YAML, servers first"
    {
      network = { name = "nix8s-dev"; subnet = "192.168.107.0/24"; gatewayArg = "192.168.107.1/24"; gateway = "192.168.107.2"; prefix = 24; };
      waves = [ [ "server" ] [ "agent" ] ];
      members = [
        { name = "agent"; instance = "nix8s-dev-agent"; ip = "192.168.107.20"; wave = 1; sshPort = null; apiPort = null; }
        { name = "server"; instance = "nix8s-dev-server"; ip = "192.168.107.10"; wave = 0; sshPort = null; apiPort = 16443; }
      ];
    }
    (let v = view dev "dev"; in {
      inherit (v) network waves;
      members = map (m: { inherit (m) name instance ip wave sshPort apiPort; }) v.members;
    }))

  (case "a member's Lima instance is plain, on the cluster's network only, with the fixed lima user"
    {
      arch = "x86_64"; cpus = 2; memory = "4GiB"; disk = "30GiB"; plain = true;
      containerd = { system = false; user = false; }; mounts = [ ];
      ssh = { localPort = 0; loadDotSSHPubKeys = false; };
      user = { name = "lima"; uid = 2999; home = "/home/lima"; shell = "/bin/bash"; };
      networks = [ { lima = "nix8s-dev"; } ];
      portForwards = [
        { proto = "udp"; guestIP = "0.0.0.0"; guestPort = 68; ignore = true; }
        { guestPort = 6443; hostIP = "127.0.0.1"; hostPort = 16443; static = true; }
      ];
      message = "nix8s cluster dev member server";
    }
    (head (filter (m: m.name == "server") (view dev "dev").members)).config)

  (case "cluster and member settings override the defaults, and sshPortBase gives fixed ports by member order"
    [ { name = "agent"; cpus = 4; memory = "8GiB"; disk = "30GiB"; vmType = "vz"; localPort = 60200; }
      { name = "server"; cpus = 2; memory = "6GiB"; disk = "30GiB"; vmType = "vz"; localPort = 60201; } ]
    (map (m: { inherit (m) name; inherit (m.config) cpus memory disk vmType; localPort = m.config.ssh.localPort; })
      (view (withLima { memory = "6GiB"; clusters.dev = { network = "192.168.107.0/24"; vmType = "vz"; sshPortBase = 60200; members.agent = { cpus = 4; memory = "8GiB"; }; }; }) "dev").members))

  (case "a Lima member's ssh endpoint in the plan is 127.0.0.1, its port and its instance"
    { host = "127.0.0.1"; port = 60101; user = "root"; keyFile = null; lima = "nix8s-dev-server"; }
    (core.plan (withLima { network = "192.168.107.0/24"; sshPortBase = 60100; })).clusters.dev.members.server.ssh)

  (case "a Lima member whose port Lima picks has port null in the plan"
    null (core.plan dev).clusters.dev.members.agent.ssh.port)

  (case "a member outside the Lima network is refused at its ip"
    [ "\"192.168.1.20\" is outside the Lima network 192.168.107.0/24 (provisioning.lima.network); give the member an address inside it" ]
    (errorAt (withIP "192.168.1.20") "clusters.dev.members.agent.ip"))

  (case "a member on the network, gateway, first or broadcast address is refused"
    [
      [ "\"192.168.107.0\" is the Lima network's own address 192.168.107.0/24 (provisioning.lima.network); pick a host address from .10 up" ]
      [ "\"192.168.107.1\" is the first address of the Lima network 192.168.107.0/24 (provisioning.lima.network), which nix8s names as its gateway to `limactl network create`; pick another" ]
      [ "\"192.168.107.2\" is the Lima network's gateway and DNS server (its second address, 192.168.107.0/24 (provisioning.lima.network)); pick another" ]
      [ "\"192.168.107.255\" is the Lima network's broadcast address 192.168.107.0/24 (provisioning.lima.network); pick another" ]
    ]
    (map (ip: errorAt (withIP ip) "clusters.dev.members.agent.ip") [ "192.168.107.0" "192.168.107.1" "192.168.107.2" "192.168.107.255" ]))

  (case "sizes Lima cannot parse, or zero, are refused at their path"
    {
      "provisioning.lima.memory" = [ "\"4 gigs\" is not a size Lima understands; write it like \"4GiB\" (a number and K, M, G, T or P; binary units: \"4G\" is \"4GiB\")" ];
      "provisioning.lima.disk" = [ "must be more than zero, got \"0GiB\"" ];
      "provisioning.lima.clusters.dev.members.agent.memory" = [ "\"1.2.3G\" is not a size Lima understands; write it like \"4GiB\" (a number and K, M, G, T or P; binary units: \"4G\" is \"4GiB\")" ];
    }
    (let cfg = withLima { memory = "4 gigs"; disk = "0GiB"; clusters.dev = { network = "192.168.107.0/24"; members.agent.memory = "1.2.3G"; }; }; in {
      "provisioning.lima.memory" = errorAt cfg "provisioning.lima.memory";
      "provisioning.lima.disk" = errorAt cfg "provisioning.lima.disk";
      "provisioning.lima.clusters.dev.members.agent.memory" = errorAt cfg "provisioning.lima.clusters.dev.members.agent.memory";
    }))

  (case "the sizes Lima accepts pass: 4G, 4GiB, 512MiB, 1.5g, 2 TB" [ ]
    (errors (withLima { network = "192.168.107.0/24"; memory = "4G"; disk = "1.5g"; clusters = { }; } // { provisioning.lima = { network = "192.168.107.0/24"; memory = "512MiB"; disk = "2 TB"; cpus = 1; }; })))

  (case "Lima's own default networks are refused with a suggestion"
    [
      "\"192.168.5.0/24\" collides with Lima's default slirp (the default network of every VM without a user-v2 network) network 192.168.5.0/24; use another private network, such as \"192.168.107.0/24\""
      "\"192.168.104.0/24\" collides with Lima's default user-v2 network 192.168.104.0/24; use another private network, such as \"192.168.107.0/24\""
      "\"192.168.105.0/24\" collides with Lima's default shared (socket_vmnet on macOS) network 192.168.105.0/24; use another private network, such as \"192.168.107.0/24\""
      "\"192.168.106.0/24\" collides with Lima's default host (socket_vmnet on macOS) network 192.168.106.0/24; use another private network, such as \"192.168.107.0/24\""
    ]
    (map (n: head (errorAt (withLima { network = n; }) "provisioning.lima.network")) [ "192.168.5.0/24" "192.168.104.0/24" "192.168.105.0/24" "192.168.106.0/24" ]))

  (case "a network containing a Lima default (192.168.0.0/16) is refused too"
    true (builtins.length (errorAt (withLima { network = "192.168.0.0/16"; }) "provisioning.lima.network") == 4))

  (case "asking for a cluster without Lima settings names the fix"
    [ { path = "provisioning.lima.clusters.prod"; message = "cluster \"prod\" does not use Lima; add provisioning.lima.clusters.prod with its network (such as \"192.168.107.0/24\"); Lima clusters: \"dev\""; } ]
    (view (two // { provisioning.lima.clusters.dev.network = "192.168.107.0/24"; }) "prod").errors)

  (case "the network shorthand with several clusters asks which use Lima"
    [ "with 2 clusters say which use Lima: provisioning.lima.clusters.<name>.network (the shorthand provisioning.lima.network is for a config with one cluster)" ]
    (errorAt two "provisioning.lima"))

  (case "a Lima cluster without a network is refused at its network"
    [ "is missing; every Lima cluster needs its own network for the members' addresses, such as \"192.168.107.0/24\"" ]
    (errorAt (withLima { clusters.dev.cpus = 2; }) "provisioning.lima.clusters.dev.network"))

  (case "two Lima clusters on overlapping networks are refused"
    [ "192.168.107.0/25 overlaps the Lima network 192.168.107.0/24 of cluster \"dev\"; give each Lima cluster its own network" ]
    (errorAt (two // { provisioning.lima.clusters = { dev.network = "192.168.107.0/24"; prod.network = "192.168.107.0/25"; }; }) "provisioning.lima.clusters.prod.network"))

  (case "a member name too long for Lima is refused once, by the host-name rule (nix8s-<63 characters> fits Lima's 76)"
    [ "host name \"dev-a23456789012345678901234567890123456789012345678901234567890123\" is 67 characters long; <cluster>-<member> must be at most 63, shorten the member or cluster name" ]
    (errorAt (dev // { clusters.dev = dev.clusters.dev // { members = dev.clusters.dev.members // { a23456789012345678901234567890123456789012345678901234567890123 = { node = "vm"; role = "agent"; ip = "192.168.107.30"; }; }; }; })
      "clusters.dev.members.a23456789012345678901234567890123456789012345678901234567890123"))

  (case "unknown Lima settings, vmTypes and arches are refused"
    {
      "provisioning.lima.cpu" = [ "is not a Lima setting; known here: \"cpus\", \"memory\", \"disk\", \"vmType\", \"arch\", \"network\", \"sshPortBase\", \"apiPortBase\", \"clusters\"" ];
      "provisioning.lima.vmType" = [ "\"wsl2\" is not a VM type for NixOS members; use \"qemu\" or \"vz\" (macOS), or leave it out for Lima's default (vz on macOS, qemu on Linux)" ];
      "provisioning.lima.arch" = [ "\"riscv64\" is not an architecture for NixOS members; use \"x86_64\" or \"aarch64\", or leave it out for the member's system" ];
    }
    (let cfg = withLima { network = "192.168.107.0/24"; cpu = 2; vmType = "wsl2"; arch = "riscv64"; }; in {
      "provisioning.lima.cpu" = errorAt cfg "provisioning.lima.cpu";
      "provisioning.lima.vmType" = errorAt cfg "provisioning.lima.vmType";
      "provisioning.lima.arch" = errorAt cfg "provisioning.lima.arch";
    }))

  (case "two members forwarded to the same 127.0.0.1 port are refused"
    [ "127.0.0.1:16443 is forwarded to both clusters.dev.members.agent.ssh and clusters.dev.members.server.api; change sshPortBase, apiPortBase or a member's sshPort" ]
    (errorAt (withLima { clusters.dev = { network = "192.168.107.0/24"; members.agent.sshPort = 16443; }; }) "provisioning.lima"))

  (case "a Lima member with a MAC gets a warning that Lima ignores it"
    [ { path = "clusters.dev.members.agent.network.mac"; message = "is ignored for Lima: Lima derives a VM's MAC from its instance directory"; } ]
    (core.validate (dev // { clusters.dev = dev.clusters.dev // { members = dev.clusters.dev.members // { agent = dev.clusters.dev.members.agent // { network.mac = "aa:bb:cc:dd:ee:02"; }; }; }; })).warnings)

  (case "the plan names a Lima cluster's network, with Lima's gateway at the second address and the API forwarded to 127.0.0.1"
    { name = "nix8s-dev"; subnet = "192.168.107.0/24"; gatewayArg = "192.168.107.1/24"; gateway = "192.168.107.2"; prefix = 24; apiEndpoint = "https://127.0.0.1:16443"; }
    (core.plan dev).clusters.dev.lima)

  (case "a cluster prefix length or gateway that differs from the Lima network's is refused"
    {
      prefix = [ "is 16, but the cluster's Lima network 192.168.107.0/24 has /24; leave it out or set it to 24" ];
      gateway = [ "\"192.168.107.1\" is not the gateway of the cluster's Lima network 192.168.107.0/24, which is always its second address 192.168.107.2; leave it out" ];
    }
    (let cfg = dev // { clusters.dev = dev.clusters.dev // { network = { prefixLength = 16; gateway = "192.168.107.1"; }; }; }; in {
      prefix = errorAt cfg "clusters.dev.network.prefixLength";
      gateway = errorAt cfg "clusters.dev.network.gateway";
    }))

  (case "a Lima member on another interface than eth0 is refused"
    [ "is \"enp1s0\", but a Lima VM has one NIC, eth0 (classic names); leave it out for Lima members" ]
    (errorAt (dev // { nodes.vm = dev.nodes.vm // { network.interface = "enp1s0"; }; }) "clusters.dev.members.agent.network.interface"))
]
