# The PXE server's view of the config: which machines (by MAC) it boots as which member, in which provision wave,
# and the server's own settings; plus every problem that would make network boot go wrong, in validate's format.
# nix8sd asks for this before it serves anything, so the rules live here and not in Go.
let
  u = import ./util.nix;
  inherit (u) problem show quoteList;
  inherit (builtins)
    attrNames concatLists concatMap elem elemAt filter genList isList isString length listToAttrs match sort;

  opt = cond: p: if cond then [ p ] else [ ];
  str = v: if isString v then v else null;
in
{ model, report, planModel }:
clusters:
let
  p = model.provisioning;
  srv = u.attrByPath [ "pxe" "server" ] { } p;
  server0 = if builtins.isAttrs srv then srv else { };
  dhcp0 = u.attrByPath [ "dhcp" ] { } server0;
  dhcp = if builtins.isAttrs dhcp0 then dhcp0 else { };
  base = [ "provisioning" "pxe" "server" ];
  subnetStr = str (dhcp.subnet or null);
  subnet = u.parseCIDR subnetStr;
  rangeParts = let r = str (dhcp.range or null); in if r == null then null else match "([^-]+)-([^-]+)" r;
  ip = str (server0.ip or null);

  server = {
    inherit ip;
    interface = str (server0.interface or null);
    mode = if (dhcp.mode or null) == null then "proxy" else str dhcp.mode;
    subnet = subnetStr;
    rangeStart = if rangeParts == null then null else elemAt rangeParts 0;
    rangeEnd = if rangeParts == null then null else elemAt rangeParts 1;
    gateway = str (dhcp.gateway or null);
    # provisioning.pxe.approve: whose secrets wait for an operator to confirm the reported host key.
    approve = let a = p.pxe.approve or null; in if isString a then a else "servers";
  };

  known = attrNames model.clusters;
  requested = if clusters == null then known else if isList clusters then clusters else [ ];
  # In the config's (alphabetical) order and each once, whatever order the caller named them in.
  served = filter (c: elem c requested) known;

  clusterErrors =
    if clusters != null && !isList clusters then
      [ (problem [ "clusters" ] "the clusters to serve must be a list of cluster names (or null for all), got ${show clusters}") ]
    else concatMap (c: opt (!(isString c && model.clusters ? ${c}))
      (problem (if isString c then [ "clusters" c ] else [ "clusters" ])
        "${show c} is not a cluster of the config, so the PXE server cannot serve it; known clusters: ${quoteList known}"))
      requested;

  # Well-formed members only: validate already reports the malformed ones.
  members = concatMap (c: let cl = model.clusters.${c}; in
    filter (m: m.isAttrs) (map (n: cl.members.${n}) cl.names)) served;
  # A MAC shared by two members is validate's error (report.errors), whether their clusters are served or not.

  # Not an error by itself: nix8sd can boot such a member once an operator assigns a discovered machine to it
  # (POST /v1/machines/{mac}/assign). Where the config is all there is (the pxe-server-<c> app), nix8sd treats
  # these as errors.
  missingMAC = concatMap (m: opt (m.mac == null)
    (problem [ "clusters" m.cluster "members" m.name "network" "mac" ]
      "is missing; the PXE server boots members by MAC: set ${u.showPath [ "clusters" m.cluster "members" m.name "network" "mac" ]} (or network.mac on its node template), assign a discovered machine to it (POST /v1/machines/{mac}/assign), or install it with nixos-anywhere (nix8s install) instead"))
    members;

  ipOutside = if subnet == null then [ ] else concatMap (m: opt (u.isIPv4 m.ip && !(u.cidrContains subnet m.ip))
    (problem [ "clusters" m.cluster "members" m.name "ip" ]
      "${show m.ip} is outside provisioning.pxe.server.dhcp.subnet ${show subnetStr}, the network the PXE server boots; give the member an address inside it or fix the subnet"))
    members;

  serverErrors = concatLists [
    (opt ((server0.ip or null) == null)
      (problem (base ++ [ "ip" ]) "is missing; the PXE server needs the address it serves from (DHCP next-server, TFTP and HTTP): set it to an address of provisioning.pxe.server.interface"))
    (opt (subnet != null && u.isIPv4 ip && !(u.cidrContains subnet ip))
      (problem (base ++ [ "ip" ]) "${show ip} is outside dhcp.subnet ${show subnetStr}; the server must be on the network it boots: set ip to its address there, or fix the subnet"))
  ];

  pxeErrors = clusterErrors ++ serverErrors ++ ipOutside;
  errors = report.errors ++ pxeErrors;

  plan = planModel model;
  machinesOf = c:
    let
      cp = plan.clusters.${c};
      waves = cp.provision;
      waveOf = listToAttrs (concatLists (genList (i: map (n: { name = n; value = i; }) (elemAt waves i)) (length waves)));
    in map (n: let m = cp.members.${n}; in {
      mac = u.toLower m.mac;
      cluster = c;
      member = n;
      inherit (m) hostName role ip;
      wave = waveOf.${n};
    }) (filter (n: cp.members.${n}.mac != null) (attrNames cp.members));
in {
  inherit errors server;
  # Served members without a MAC, as problems: no machine boots as them until one is assigned.
  unmatched = missingMAC;
  inherit (report) warnings;
  # Only a config without errors is planned: an invalid one boots nothing.
  machines = if errors != [ ] then [ ] else sort (a: b: a.mac < b.mac) (concatMap machinesOf served);
}
