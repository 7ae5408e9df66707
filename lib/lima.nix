# Local clusters in Lima VMs (docs/lima.md): which clusters use Lima and with what settings, every problem with
# them in validate's format, and per member the Lima instance (as data; the CLI writes it as YAML and adds the
# image and the host key), its SSH endpoint and its provision wave. Lima's rules are checked here, not in Go,
# so `nix8s validate` and the flake refuse what `limactl` would.
let
  u = import ./util.nix;
  inherit (u) problem show quoteList;
  inherit (builtins)
    attrNames concatLists concatMap elem elemAt filter genList groupBy isAttrs isInt isString length listToAttrs
    match stringLength;

  opt = cond: p: if cond then [ p ] else [ ];

  # docker/go-units RAMInBytes, which Lima parses memory and disk with: binary multipliers for every suffix
  # ("4G" = "4GiB"). One decimal part only (go-units also refuses "1.2.3").
  sizeRe = "([0-9]+(\\.[0-9]+)?) ?([kKmMgGtTpP])?[iI]?[bB]?";
  zeroRe = "0+(\\.0+)?";
  # Lima's identifiers (pkg/identifiers/validate.go) for instance and network names.
  identRe = "[A-Za-z0-9]+([._-][A-Za-z0-9]+)*";
  maxIdent = 76;
  vmTypes = [ "qemu" "vz" ];
  arches = [ "x86_64" "aarch64" ];
  # Lima's own networks (pkg/networks/const.go, networks.TEMPLATE.yaml): a cluster network overlapping one of
  # them collides on the host (socket_vmnet's bootpd answers on `shared`) or in a VM using both.
  limaNetworks = [
    { name = "slirp (the default network of every VM without a user-v2 network)"; cidr = "192.168.5.0/24"; }
    { name = "user-v2"; cidr = "192.168.104.0/24"; }
    { name = "shared (socket_vmnet on macOS)"; cidr = "192.168.105.0/24"; }
    { name = "host (socket_vmnet on macOS)"; cidr = "192.168.106.0/24"; }
  ];
  suggestion = "192.168.107.0/24";
  overlaps = a: b: a.network < b.network + b.size && b.network < a.network + a.size;

  # The fixed Lima user the guest module declares (modules/nixos/lima-guest.nix), so users.mutableUsers = false
  # cannot remove it.
  limaUser = { name = "lima"; uid = 2999; home = "/home/lima"; shell = "/bin/bash"; };

  defaults = { cpus = 2; memory = "4GiB"; disk = "30GiB"; vmType = null; arch = null; sshPortBase = null; apiPortBase = 16443; };
  keysAt = {
    top = [ "cpus" "memory" "disk" "vmType" "arch" "network" "sshPortBase" "apiPortBase" "clusters" ];
    cluster = [ "cpus" "memory" "disk" "vmType" "arch" "network" "sshPortBase" "apiPortBase" "members" ];
    member = [ "cpus" "memory" "disk" "sshPort" ];
  };

  unknownKeys = segs: known: v:
    concatMap (k: opt (!(elem k known))
      (problem (segs ++ [ k ]) "is not a Lima setting; known here: ${quoteList known}"))
      (if isAttrs v then attrNames v else [ ]);
  notAttrs = segs: v: opt (v != null && !isAttrs v) (problem segs "must be an attribute set, got ${show v}");
  attrsOr = v: if isAttrs v then v else { };

  sizeProblems = segs: v:
    if v == null then [ ]
    else if !isString v || match sizeRe v == null then
      [ (problem segs "${show v} is not a size Lima understands; write it like \"4GiB\" (a number and K, M, G, T or P; binary units: \"4G\" is \"4GiB\")") ]
    else opt (match zeroRe (elemAt (match sizeRe v) 0) != null) (problem segs "must be more than zero, got ${show v}");

  portProblems = segs: what: v:
    opt (v != null && !(isInt v && v >= 1024 && v <= 65535))
      (problem segs "must be ${what} from 1024 to 65535 (a port on 127.0.0.1 a user may bind), got ${show v}");

  settingProblems = segs: s: concatLists [
    (let c = s.cpus or null; in opt (c != null && !(isInt c && c >= 1)) (problem (segs ++ [ "cpus" ]) "must be a whole number of at least 1, got ${show c}"))
    (sizeProblems (segs ++ [ "memory" ]) (s.memory or null))
    (sizeProblems (segs ++ [ "disk" ]) (s.disk or null))
    (let v = s.vmType or null; in opt (v != null && !(elem v vmTypes))
      (problem (segs ++ [ "vmType" ]) "${show v} is not a VM type for NixOS members; use \"qemu\" or \"vz\" (macOS), or leave it out for Lima's default (vz on macOS, qemu on Linux)"))
    (let v = s.arch or null; in opt (v != null && !(elem v arches))
      (problem (segs ++ [ "arch" ]) "${show v} is not an architecture for NixOS members; use \"x86_64\" or \"aarch64\", or leave it out for the member's system"))
    (portProblems (segs ++ [ "sshPortBase" ]) "a port number" (s.sshPortBase or null))
    (portProblems (segs ++ [ "apiPortBase" ]) "a port number" (s.apiPortBase or null))
  ];

  networkProblems = segs: v:
    if v == null then [ ]
    else
      let c = u.parseCIDR v; in
      if c == null then [ (problem segs "${show v} is not an IPv4 CIDR; write it as address/prefix, such as \"${suggestion}\"") ]
      else if c.hostBitsSet then [ (problem segs "${show v} has host bits set; the network is \"${u.intToIp c.network}/${toString c.prefix}\"") ]
      else if c.prefix < 16 || c.prefix > 29 then
        [ (problem segs "${show v} must have a prefix from /16 to /29 (Lima's DHCP pool covers the whole network; a /30 has no room for members), such as \"${suggestion}\"") ]
      else concatMap (l: opt (overlaps c (u.parseCIDR l.cidr))
        (problem segs "${show v} collides with Lima's default ${l.name} network ${l.cidr}; use another private network, such as \"${suggestion}\""))
        limaNetworks;
in
model:
let
  p = model.provisioning;
  raw = p.lima or null;
  lima = attrsOr raw;
  top = [ "provisioning" "lima" ];
  clustersRaw = lima.clusters or null;
  known = attrNames model.clusters;

  # Which clusters use Lima: those under provisioning.lima.clusters, or, with the shorthand `network` and no
  # `clusters`, the config's only cluster (design 5.3's shape).
  shorthand = raw != null && !(lima ? clusters) && (lima.network or null) != null;
  limaClusters =
    if lima ? clusters then filter (c: model.clusters ? ${c}) (attrNames (attrsOr clustersRaw))
    else if shorthand && length known == 1 then known
    else [ ];
  clusterSettings = c: if lima ? clusters then attrsOr (attrsOr clustersRaw).${c} else { };
  setting = c: mn: k:
    let
      cs = clusterSettings c;
      ms = if mn == null then { } else attrsOr ((attrsOr (cs.members or null)).${mn} or null);
      pick = l: if l == [ ] then defaults.${k} or null else let v = builtins.head l; in if v != null then v else pick (builtins.tail l);
    in pick [ (ms.${k} or null) (cs.${k} or null) (lima.${k} or null) ];

  networkOf = c: let cs = clusterSettings c; in if (cs.network or null) != null then cs.network else if lima ? clusters && !shorthand then null else lima.network or null;
  networkPath = c: if ((clusterSettings c).network or null) != null then top ++ [ "clusters" c "network" ] else top ++ [ "network" ];

  # Instances and networks are named after the cluster and member, so two flakes' clusters named alike share
  # them: `up` refuses an instance whose message is not its own.
  instanceName = c: m: "nix8s-${c}-${m}";
  networkName = c: "nix8s-${c}";
  identProblem = segs: what: name:
    opt (match identRe name == null || stringLength name > maxIdent || match ".*\\.[yY][aA]?[mM][lL]" name != null)
      (problem segs "the Lima ${what} name ${show name} is refused by Lima (letters and digits separated by single \".\", \"_\" or \"-\", at most ${toString maxIdent} characters, not ending in .yml or .yaml); use a shorter name");

  cidrOf = c: let n = networkOf c; in if isString n then u.parseCIDR n else null;
  validCIDR = c: let x = cidrOf c; in x != null && !x.hostBitsSet && x.prefix >= 16 && x.prefix <= 29;

  # Per member: index among the cluster's sorted members (stable ports), the settings it gets.
  membersOf = c: let names = model.clusters.${c}.names; in genList (i: { index = i; name = elemAt names i; }) (length names);
  sshPortOf = c: im:
    let own = setting c im.name "sshPort"; base = setting c null "sshPortBase"; in
    if own != null then own else if base != null && isInt base then base + im.index else null;
  serverIndex = c: m: let servers = model.clusters.${c}.servers; in
    builtins.head (filter (i: elemAt servers i == m) (genList (i: i) (length servers)));
  apiPortOf = c: m:
    let base = setting c null "apiPortBase"; in
    if model.clusters.${c}.members.${m}.role == "server" && isInt base then base + serverIndex c m else null;

  archOf = c: m:
    let a = setting c m "arch"; sys = model.clusters.${c}.members.${m}.config.system or "x86_64-linux"; in
    if a != null then a else if sys == "aarch64-linux" then "aarch64" else "x86_64";

  memberProblems = c: im:
    let
      m = model.clusters.${c}.members.${im.name};
      segs = [ "clusters" c "members" im.name ];
      net = cidrOf c;
      n = if u.isIPv4 m.ip then u.ipToInt (u.parseIPv4 m.ip) else null;
      netStr = "${networkOf c} (${u.showPath (networkPath c)})";
      sys = m.config.system or null;
    in concatLists [
      (identProblem segs "instance" (instanceName c im.name))
      (if !(validCIDR c) || n == null then [ ]
       else if !(u.cidrContains net m.ip) then
         [ (problem (segs ++ [ "ip" ]) "${show m.ip} is outside the Lima network ${netStr}; give the member an address inside it") ]
       else if n == net.network then [ (problem (segs ++ [ "ip" ]) "${show m.ip} is the Lima network's own address ${netStr}; pick a host address from .10 up") ]
       else if n == net.network + net.size - 1 then [ (problem (segs ++ [ "ip" ]) "${show m.ip} is the Lima network's broadcast address ${netStr}; pick another") ]
       else if n == net.network + 2 then [ (problem (segs ++ [ "ip" ]) "${show m.ip} is the Lima network's gateway and DNS server (its second address, ${netStr}); pick another") ]
       else opt (n == net.network + 1)
         (problem (segs ++ [ "ip" ]) "${show m.ip} is the first address of the Lima network ${netStr}, which nix8s names as its gateway to `limactl network create`; pick another"))
      (let i = m.config.network.interface or null; in
        opt (i != null && i != "eth0")
          (problem (segs ++ [ "network" "interface" ]) "is ${show i}, but a Lima VM has one NIC, eth0 (classic names); leave it out for Lima members"))
      (let a = setting c im.name "arch"; in
        opt (a != null && elem a arches && isString sys && sys != "${a}-linux")
          (problem (top ++ [ "arch" ]) "${show a} does not match the system ${show sys} of ${u.showPath segs}; a Lima VM runs its member's own system: leave arch out or change the member's system"))
    ];

  clusterProblems = c:
    let
      cs = clusterSettings c;
      segs = top ++ [ "clusters" c ];
      ms = membersOf c;
      ports = filter (x: x.port != null) (map (im: { inherit (im) name; port = sshPortOf c im; }) ms);
      apiPorts = filter (x: x.port != null) (map (im: { inherit (im) name; port = apiPortOf c im.name; }) ms);
    in concatLists [
      (opt (networkOf c == null)
        (problem (segs ++ [ "network" ]) "is missing; every Lima cluster needs its own network for the members' addresses, such as \"${suggestion}\""))
      (identProblem [ "clusters" c ] "network" (networkName c))
      (concatMap (im: memberProblems c im) ms)
      # The guest puts the member's address on eth0 with the cluster's prefix and gateway (lib/nixos.nix), which
      # must be the Lima network's: Lima's switch hands the reserved address to eth0, its gateway is net+2.
      (let pl = model.clusters.${c}.network.prefixLength; in
        opt (validCIDR c && pl != (cidrOf c).prefix)
          (problem [ "clusters" c "network" "prefixLength" ] "is ${show pl}, but the cluster's Lima network ${networkOf c} has /${toString (cidrOf c).prefix}; leave it out or set it to ${toString (cidrOf c).prefix}"))
      (let g = model.clusters.${c}.network.gateway; in
        opt (validCIDR c && g != null && g != u.intToIp ((cidrOf c).network + 2))
          (problem [ "clusters" c "network" "gateway" ] "${show g} is not the gateway of the cluster's Lima network ${networkOf c}, which is always its second address ${u.intToIp ((cidrOf c).network + 2)}; leave it out"))
      (concatMap (x: opt (x.port == 22) (problem (segs ++ [ "members" x.name "sshPort" ]) "must not be 22")) ports)
      (let base = setting c null "sshPortBase"; in
        opt (isInt base && base + length ms - 1 > 65535) (problem (segs ++ [ "sshPortBase" ]) "${toString base} plus ${toString (length ms)} members runs past port 65535; pick a lower base"))
      (concatMap (x: portProblems (segs ++ [ "members" x.name "sshPort" ]) "a port number" x.port) ports)
      (concatMap (mn: opt (!(model.clusters.${c}.members ? ${mn}))
        (problem (segs ++ [ "members" mn ]) "${show mn} is not a member of cluster ${show c}; known members: ${quoteList model.clusters.${c}.names}"))
        (attrNames (attrsOr (cs.members or null))))
    ];

  allPorts = concatMap (c: concatLists [
    (map (im: { port = sshPortOf c im; path = [ "clusters" c "members" im.name "ssh" ]; }) (membersOf c))
    (map (im: { port = apiPortOf c im.name; path = [ "clusters" c "members" im.name "api" ]; }) (membersOf c))
  ]) limaClusters;
  portClashes = let byPort = groupBy (x: toString x.port) (filter (x: isInt x.port) allPorts); in
    concatMap (k: let xs = byPort.${k}; in opt (length xs > 1)
      (problem top "127.0.0.1:${k} is forwarded to both ${u.showPath (elemAt xs 0).path} and ${u.showPath (elemAt xs 1).path}; change sshPortBase, apiPortBase or a member's sshPort"))
      (attrNames byPort);

  clusterNets = filter (x: x.cidr != null) (map (c: { inherit c; cidr = if validCIDR c then cidrOf c else null; }) limaClusters);
  netClashes = concatLists (genList (i: let a = elemAt clusterNets i; in
    concatMap (b: opt (overlaps a.cidr b.cidr)
      (problem (networkPath b.c) "${networkOf b.c} overlaps the Lima network ${networkOf a.c} of cluster ${show a.c}; give each Lima cluster its own network"))
      (genList (j: elemAt clusterNets (i + 1 + j)) (length clusterNets - i - 1))) (length clusterNets));

  errors = if raw == null then [ ] else concatLists [
    (notAttrs top raw)
    (unknownKeys top keysAt.top lima)
    (settingProblems top lima)
    (networkProblems (top ++ [ "network" ]) (lima.network or null))
    (notAttrs (top ++ [ "clusters" ]) clustersRaw)
    (opt (shorthand && length known != 1)
      (problem top "with ${toString (length known)} clusters say which use Lima: provisioning.lima.clusters.<name>.network (the shorthand provisioning.lima.network is for a config with one cluster)"))
    (concatMap (c: let segs = top ++ [ "clusters" c ]; cs = (attrsOr clustersRaw).${c}; in concatLists [
      (opt (!(model.clusters ? ${c})) (problem segs "${show c} is not a cluster of the config; known clusters: ${quoteList known}"))
      (notAttrs segs cs)
      (unknownKeys segs keysAt.cluster cs)
      (settingProblems segs (attrsOr cs))
      (networkProblems (segs ++ [ "network" ]) ((attrsOr cs).network or null))
      (concatMap (mn: let ms = (attrsOr (attrsOr cs).members).${mn}; msegs = segs ++ [ "members" mn ]; in
        notAttrs msegs ms ++ unknownKeys msegs keysAt.member ms ++ settingProblems msegs (attrsOr ms)
        ++ portProblems (msegs ++ [ "sshPort" ]) "a port number" ((attrsOr ms).sshPort or null))
        (attrNames (attrsOr ((attrsOr cs).members or null))))
    ]) (attrNames (attrsOr clustersRaw)))
    (concatMap clusterProblems limaClusters)
    portClashes
    netClashes
  ];

  warnings = concatMap (c: concatMap (m: opt (m.mac != null)
    (problem [ "clusters" c "members" m.name "network" "mac" ] "is ignored for Lima: Lima derives a VM's MAC from its instance directory"))
    model.clusters.${c}.memberList) limaClusters;

  # ---- the per-member data ---------------------------------------------------------------------------------------
  subnetOf = c: let x = cidrOf c; in {
    name = networkName c;
    subnet = "${u.intToIp x.network}/${toString x.prefix}";
    # What `limactl network create --gateway` is given; Lima then serves gateway and DNS on the second address.
    gatewayArg = "${u.intToIp (x.network + 1)}/${toString x.prefix}";
    gateway = u.intToIp (x.network + 2);
    inherit (x) prefix;
  };

  instanceOf = c: im:
    let
      m = model.clusters.${c}.members.${im.name};
      vmType = setting c im.name "vmType";
      sshPort = sshPortOf c im;
      apiPort = apiPortOf c im.name;
    in
    (if vmType == null then { } else { inherit vmType; }) // {
      arch = archOf c im.name;
      cpus = setting c im.name "cpus";
      memory = setting c im.name "memory";
      disk = setting c im.name "disk";
      # Only SSH is needed from the hostagent: no guest agent, mounts or containerd (the guest is NixOS).
      plain = true;
      containerd = { system = false; user = false; };
      mounts = [ ];
      ssh = { localPort = if sshPort == null then 0 else sshPort; loadDotSSHPubKeys = false; };
      user = limaUser;
      # The only NIC, eth0: the member's address is a DHCP reservation on this network (docs/lima.md).
      networks = [ { lima = networkName c; } ];
      # lima#4501 (inert in plain mode, right if plain is turned off); servers' API on 127.0.0.1.
      portForwards = [ { proto = "udp"; guestIP = "0.0.0.0"; guestPort = 68; ignore = true; } ]
        ++ (if apiPort == null then [ ] else [ { guestPort = 6443; hostIP = "127.0.0.1"; hostPort = apiPort; static = true; } ]);
      message = "nix8s cluster ${c} member ${im.name}";
    };
in {
  inherit errors warnings;
  clusters = limaClusters;
  inherit instanceName networkName;

  # What the SSH endpoint of a member of a Lima cluster changes, or null for other clusters: 127.0.0.1 and the
  # forwarded port (null: Lima picks one at every start and the CLI asks `limactl list --json`), root (the guest
  # module authorizes Lima's key for it, as the lima user has passwordless sudo anyway), the instance. keyFile stays
  # provisioning.nixos-anywhere.ssh.keyFile; null there means Lima's own key ($LIMA_HOME/_config/user).
  ssh = c: if !(elem c limaClusters) then null else
    let ports = listToAttrs (map (im: { name = im.name; value = sshPortOf c im; }) (membersOf c)); in
    mn: { host = "127.0.0.1"; port = ports.${mn}; user = "root"; lima = instanceName c mn; };

  # The plan's `lima` of a cluster: its Lima network, or null when it does not run in Lima.
  # apiEndpoint is the first server's API as the host reaches it (the forward of its 6443), for the host-side
  # operations (kubeconfig); the members themselves keep the plan's apiEndpoint.
  network = c: if !(elem c limaClusters && validCIDR c) then null else
    let fs = model.clusters.${c}.firstServer; port = if fs == null then null else apiPortOf c fs; in
    subnetOf c // { apiEndpoint = if port == null then null else "https://127.0.0.1:${toString port}"; };

  # `lima cfg cluster`: the view `nix8s lima` acts on. Errors include validate's (report); members only without.
  view = report: plan: c:
    let
      askErrors =
        if !(isString c) then [ (problem [ "clusters" ] "the cluster must be a name, got ${show c}") ]
        else if !(model.clusters ? ${c}) then [ (problem [ "clusters" ] "${show c} is not a cluster of the config; known clusters: ${quoteList known}") ]
        else opt (!(elem c limaClusters))
          (problem (top ++ [ "clusters" c ]) "cluster ${show c} does not use Lima; add provisioning.lima.clusters.${c} with its network (such as \"${suggestion}\")${if limaClusters == [ ] then "" else "; Lima clusters: ${quoteList limaClusters}"}");
      allErrors = report.errors ++ askErrors;
      cl = model.clusters.${c};
      # The plan's join waves: the first server, each other server alone, then the agents.
      waves = plan.clusters.${c}.provision;
      waveOf = listToAttrs (concatLists (genList (i: map (n: { name = n; value = i; }) (elemAt waves i)) (length waves)));
    in {
      errors = allErrors;
      inherit (report) warnings;
      cluster = c;
    } // (if allErrors != [ ] then { } else {
      network = subnetOf c;
      inherit waves;
      members = map (im: let m = cl.members.${im.name}; in {
        inherit (im) name;
        inherit (m) role ip hostName;
        instance = instanceName c im.name;
        wave = waveOf.${im.name};
        sshPort = sshPortOf c im;
        apiPort = apiPortOf c im.name;
        config = instanceOf c im;
      }) (membersOf c);
    });
}
