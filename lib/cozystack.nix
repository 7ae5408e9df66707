# Cozystack on a nix8s cluster (`clusters.<c>.cozystack`, issue 14): its settings with their defaults, the rules
# that refuse a cluster Cozystack cannot run on, the k3s flags and each member's NixOS data it needs, and the
# platform Package, all rendered as data from the cluster's own networks. Facts and sources:
# docs/research/cozystack.md (Cozystack v1.6.2); what is built and what is not: docs/cozystack.md.
let
  u = import ./util.nix;
  inherit (u) problem show quoteList;
  inherit (builtins)
    all attrNames concatLists concatMap concatStringsSep elem elemAt filter genList isAttrs isBool isInt isList
    isString length map match;

  opt = cond: p: if cond then [ p ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: a: if cond then a else { };

  defaultVersion = "v1.6.2";
  releaseAsset = v: asset: "https://github.com/cozystack/cozystack/releases/download/${v}/${asset}";

  # The release manifests, pinned per version (fixed outputs: nothing is applied unless its bytes have this hash).
  # crds: sha256 of internal/crdinstall/manifests/*.yaml concatenated at the tag, which is how `make manifests`
  # builds the asset; not compared with the uploaded asset (no network where it was pinned). operator: a
  # `helm template` render that could not be made offline, so no hash is known: until one is set
  # (cozystack.manifests), validate warns and `nix8s cozystack bootstrap` refuses to apply it, each saying how to
  # pin it (internal/cozystack, docs/cozystack.md "Manifests").
  pins = {
    "v1.6.2" = {
      crds = { url = releaseAsset "v1.6.2" "cozystack-crds.yaml"; hash = "sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8="; };
      operator = { url = releaseAsset "v1.6.2" "cozystack-operator-generic.yaml"; hash = null; };
    };
  };

  # k3s's defaults, which the Package must repeat (Cozystack's own defaults differ: 10.244.0.0/16, 10.96.0.0/16).
  defaultPodCidr = "10.42.0.0/16";
  defaultServiceCidr = "10.43.0.0/16";
  defaultJoinCidr = "100.64.0.0/16";
  defaultMaxPods = 220;
  defaultTimeout = "45m";
  clusterDomain = "cozy.local";
  # lvm.conf's devices/global_filter: LVM must not scan DRBD, device-mapper, zvol or loop devices that hold
  # LINSTOR's volumes (cozystack/ansible-cozystack prepare-ubuntu.yml:333-346).
  defaultLvmFilter = [ "r|^/dev/drbd.*|" "r|^/dev/dm-.*|" "r|^/dev/zd.*|" "r|^/dev/loop.*|" ];

  knownKeys = [ "enable" "version" "host" "apiServerEndpoint" "maxPods" "network" "externalIPs" "manifests" "lvmGlobalFilter" "bootstrapTimeout" ];

  sriRe = "sha256-[A-Za-z0-9+/]{43}=";
  dnsRe = "([a-z0-9]|[a-z0-9][-a-z0-9]{0,61}[a-z0-9])(\\.([a-z0-9]|[a-z0-9][-a-z0-9]{0,61}[a-z0-9]))+";
  durationRe = "([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+";
  endpointRe = "https://([^/:]+)(:([0-9]+))?/?";

  # What a flag is given in an argument list, with its index: `--name=value`, or `--name value`.
  flagsAt = name: args:
    concatLists (genList (i:
      let a = elemAt args i; m = match "--${name}=(.*)" a; in
      if m != null then [ { index = i; value = elemAt m 0; } ]
      else if a == "--${name}" then [ { index = i; value = if i + 1 < length args then elemAt args (i + 1) else "true"; } ]
      else [ ]) (length args));

  overlaps = a: b: a.network < b.network + b.size && b.network < a.network + a.size;

  # The cluster's Cozystack settings with their defaults, or null when it is off.
  settingsOf = c:
    let z = c.raw.cozystack or null; in
    if !(isAttrs z) || (z.enable or false) != true then null
    else
      let
        net = c.k3s.network or { };
        version = z.version or defaultVersion;
        pin = if isString version then pins.${version} or null else null;
        man = if isAttrs (z.manifests or null) then z.manifests else { };
        host = z.host or (if isString (c.raw.domain or null) then c.raw.domain else null);
      in {
        inherit version host;
        apiServerHost = c.endpointHost;
        apiServerEndpoint = z.apiServerEndpoint or "https://${c.endpointHost}:6443";
        maxPods = z.maxPods or defaultMaxPods;
        podCidr = net.clusterCidr or defaultPodCidr;
        serviceCidr = net.serviceCidr or defaultServiceCidr;
        joinCidr = z.network.joinCidr or defaultJoinCidr;
        externalIPs = z.externalIPs or [ ];
        lvmGlobalFilter = z.lvmGlobalFilter or defaultLvmFilter;
        bootstrapTimeout = z.bootstrapTimeout or defaultTimeout;
        manifests = {
          crds = man.crds or (if pin != null then pin.crds else null);
          operator = man.operator or (if pin != null then pin.operator else null);
        };
      };

  # The k3s server flags Cozystack's generic install requires (website v1.6 install/kubernetes/generic.md:121-135),
  # plus --nonroot-devices for KubeVirt CDI (k3s >= v1.32; docs/research/cozystack.md section 1).
  serverFlags = s: [
    "--flannel-backend=none" "--disable-network-policy" "--disable-kube-proxy"
    "--disable=traefik" "--disable=servicelb" "--disable=local-storage" "--disable=metrics-server"
    "--cluster-domain=${clusterDomain}"
  ];
  memberFlags = s: [ "--kubelet-arg=max-pods=${toString s.maxPods}" "--nonroot-devices" ];

  # ---- validation ------------------------------------------------------------------------------------------------

  # Every problem of one cluster's cozystack section and of what it contradicts: `{ errors; warnings; }`.
  problems = model: c:
    let
      z = c.raw.cozystack or null;
      segs = [ "clusters" c.name "cozystack" ];
      at = k: segs ++ k;
      enablePath = u.showPath (at [ "enable" ]);
    in
    if z == null then { errors = [ ]; warnings = [ ]; }
    else if !(isAttrs z) || u.isNixOnly z then { errors = [ (problem segs "must be an attribute set such as { enable = true; host = \"example.org\"; }, got ${show z}") ]; warnings = [ ]; }
    else if !(isBool (z.enable or false)) then { errors = [ (problem (at [ "enable" ]) "must be true or false, got ${show z.enable}") ]; warnings = [ ]; }
    else if z.enable or false != true then { errors = [ ]; warnings = [ ]; }
    else
      let
        s = settingsOf c;
        k3s = c.k3s;
        extra = if isAttrs (k3s.extraArgs or null) then k3s.extraArgs else { };
        argsOf = role: let a = extra.${role} or [ ]; in if isList a && all isString a then a else [ ];
        serverArgs = argsOf "server";
        agentArgs = argsOf "agent";
        net = if isAttrs (k3s.network or null) then k3s.network else { };
        # List elements are named by their index: clusters.prod.k3s.extraArgs.server.1.
        argPath = role: i: "${u.showPath [ "clusters" c.name "k3s" "extraArgs" role ]}.${toString i}";
        contradiction = role: i: msg: { path = argPath role i; message = "contradicts ${enablePath}: ${msg}"; };

        # A user flag with a value other than the one Cozystack needs.
        wrongValue = role: args: name: ok: need:
          map (f: contradiction role f.index "Cozystack needs ${need}, got --${name}=${f.value}; remove the flag")
            (filter (f: !(ok f.value)) (flagsAt name args));
        offSwitch = role: args: name: why:
          map (f: contradiction role f.index "Cozystack needs --${name} (${why}); remove --${name}=${f.value}")
            (filter (f: elem f.value [ "false" "False" "0" ]) (flagsAt name args));
        maxPods = if isInt s.maxPods then toString s.maxPods else show s.maxPods;
        maxPodsArgs = role: args:
          concatMap (f:
            let m = match "max-pods=(.*)" f.value; in
            opt (m != null && elemAt m 0 != maxPods)
              (contradiction role f.index "Cozystack sets max-pods from ${u.showPath (at [ "maxPods" ])} (${maxPods}); set it there instead of --kubelet-arg=max-pods=${elemAt m 0}"))
            (flagsAt "kubelet-arg" args);
        cidrArgs = name: key: want:
          map (f: contradiction "server" f.index "the platform Package takes the ${key} from ${u.showPath [ "clusters" c.name "k3s" "network" key ]} (${want}); set it there instead of --${name}=${f.value}")
            (filter (f: f.value != want) (flagsAt name serverArgs));
        flagErrors = concatLists [
          (wrongValue "server" serverArgs "flannel-backend" (v: v == "none") "--flannel-backend=none (its network is Kube-OVN with Cilium)")
          (wrongValue "server" serverArgs "cluster-domain" (v: v == clusterDomain) "--cluster-domain=${clusterDomain}")
          (offSwitch "server" serverArgs "disable-kube-proxy" "Cilium replaces kube-proxy")
          (offSwitch "server" serverArgs "disable-network-policy" "Cilium enforces network policies")
          (offSwitch "server" serverArgs "nonroot-devices" "KubeVirt's CDI writes block devices as non-root")
          (offSwitch "agent" agentArgs "nonroot-devices" "KubeVirt's CDI writes block devices as non-root")
          (maxPodsArgs "server" serverArgs)
          (maxPodsArgs "agent" agentArgs)
          (cidrArgs "cluster-cidr" "clusterCidr" s.podCidr)
          (cidrArgs "service-cidr" "serviceCidr" s.serviceCidr)
        ];

        kv = k3s.version or null;
        minor = if isString kv then match "v1\\.([0-9]+)\\..*" kv else null;
        versionErrors = opt (minor != null && builtins.fromJSON (elemAt minor 0) < 32)
          (problem [ "clusters" c.name "k3s" "version" ] "Cozystack needs k3s v1.32 or newer (${enablePath}); got ${show kv}, set a newer release such as \"v1.34.2+k3s1\"");

        v = z.version or null;
        vm = if isString v then match "v([0-9]+)\\.([0-9]+)\\.([0-9]+)" v else null;
        man = z.manifests or null;
        manifestErrors = part:
          let mp = at [ "manifests" part ]; x = man.${part} or null; in
          if x == null then [ (problem mp "is missing; give both manifests.crds and manifests.operator as { url; hash; }, or neither") ]
          else if !(isAttrs x) then [ (problem mp "must be { url; hash; }, got ${show x}") ]
          else opt (!(isString (x.url or null) && match "https?://.+" x.url != null)) (problem (mp ++ [ "url" ]) "must be an http(s) URL of the manifest, got ${show (x.url or null)}")
            ++ opt (!(isString (x.hash or null) && match sriRe x.hash != null)) (problem (mp ++ [ "hash" ]) "must be the SRI sha256 hash of the file, such as \"sha256-r411iVK2+doiHSN0w79HJCOofC/s81Xik4YuxH9wiZ8=\" (nix hash file --sri FILE), got ${show (x.hash or null)}");

        host = s.host;
        ep = z.apiServerEndpoint or null;
        epm = if isString ep then match endpointRe ep else null;
        mp = z.maxPods or null;
        jc = z.network.joinCidr or null;
        join = u.parseCIDR s.joinCidr;
        pod = u.parseCIDR s.podCidr;
        svc = u.parseCIDR s.serviceCidr;
        ips = filter u.isIPv4 (map (m: m.ip) c.memberList);
        joinPath = at [ "network" "joinCidr" ];
        netPath = key: [ "clusters" c.name "k3s" "network" key ];
        ipIn = cidr: filter (ip: u.cidrContains cidr ip) ips;
        eips = z.externalIPs or null;
        lf = z.lvmGlobalFilter or null;
        to = z.bootstrapTimeout or null;

        drbdOff = concatMap (m:
          opt ((m.config.extensions.drbd.enable or null) == false)
            (problem (if (m.overrides.extensions.drbd.enable or null) != null || m.nodeName == null
                      then [ "clusters" c.name "members" m.name "extensions" "drbd" "enable" ]
                      else [ "nodes" m.nodeName "extensions" "drbd" "enable" ])
              "contradicts ${enablePath}: Cozystack needs DRBD 9 on every member (LINSTOR's satellites run on all nodes); remove the setting"))
          (filter (m: m.isAttrs) c.memberList);
        # The core's pin of the operator manifest has no hash (v1.6.2: a helm render no source file holds, so it
        # could not be computed offline): valid, but bootstrap refuses until the config pins it.
        opPin = s.manifests.operator;
        crdPin = s.manifests.crds;
        unpinnedOperator = man == null && isAttrs opPin && opPin.hash == null;
      in {
        errors = concatLists [
          (concatMap (k: opt (!(elem k knownKeys)) (problem (at [ k ]) "unknown Cozystack setting; known: ${quoteList knownKeys}")) (attrNames z))
          (opt (v != null && vm == null) (problem (at [ "version" ]) "${show v} is not a Cozystack release; write it as its tags, such as \"${defaultVersion}\""))
          (opt (vm != null && builtins.fromJSON (elemAt vm 0) < 1) (problem (at [ "version" ]) "${show v} has no generic Kubernetes variant (it starts with v1.0.0); use \"${defaultVersion}\""))
          (opt (vm != null && man == null && !(pins ? ${v})) (problem (at [ "version" ]) "no pinned manifests for ${show v} (known: ${quoteList (attrNames pins)}); set cozystack.manifests.crds and .operator to { url; hash; }"))
          (if man == null then [ ] else if !(isAttrs man) then [ (problem (at [ "manifests" ]) "must be { crds = { url; hash; }; operator = { url; hash; }; }, got ${show man}") ]
           else manifestErrors "crds" ++ manifestErrors "operator")
          (if host == null then [ (problem (at [ "host" ]) "Cozystack needs a publishing host (its dashboard and APIs are served under it): set clusters.${c.name}.domain or clusters.${c.name}.cozystack.host, such as \"k8s.example.com\"") ]
           else opt (!(isString host && match dnsRe host != null) || u.isIPv4 host)
             (problem (if z ? host then at [ "host" ] else [ "clusters" c.name "domain" ]) "${show host} is not a DNS name; Cozystack publishes its services under a domain such as \"k8s.example.com\""))
          (opt (ep != null && epm == null) (problem (at [ "apiServerEndpoint" ]) "${show ep} is not an https URL of the API server; write it as \"https://<host>:6443\""))
          (opt (mp != null && !(isInt mp && mp >= 1)) (problem (at [ "maxPods" ]) "must be a whole number of at least 1, got ${show mp}"))
          (opt (z ? network && !(isAttrs z.network)) (problem (at [ "network" ]) "must be an attribute set such as { joinCidr = \"${defaultJoinCidr}\"; }, got ${show z.network}"))
          (if jc == null then [ ] else if !(isString jc) || join == null then [ (problem joinPath "${show jc} is not an IPv4 CIDR; write it as address/prefix, such as \"${defaultJoinCidr}\"") ]
           else concatLists [
             (opt join.hostBitsSet (problem joinPath "${show jc} has host bits set; the network is \"${u.intToIp join.network}/${toString join.prefix}\""))
             (opt (pod != null && overlaps join pod) (problem joinPath "${show jc} overlaps the pod network ${show s.podCidr} (${u.showPath (netPath "clusterCidr")}); pick a free range such as \"${defaultJoinCidr}\""))
             (opt (svc != null && overlaps join svc) (problem joinPath "${show jc} overlaps the service network ${show s.serviceCidr} (${u.showPath (netPath "serviceCidr")}); pick a free range such as \"${defaultJoinCidr}\""))
           ])
          (opt (join != null && ipIn join != [ ]) (problem joinPath "${show s.joinCidr} holds the member address ${show (builtins.head (ipIn join))}; Kube-OVN's join network must not overlap the nodes' network: pick a free range"))
          (opt (pod != null && ipIn pod != [ ]) (problem (netPath "clusterCidr") "${show s.podCidr} (the pod network, ${if net ? clusterCidr then "set here" else "k3s's default"}) holds the member address ${show (builtins.head (ipIn pod))}; with ${enablePath} pods and nodes must not share addresses: set a free range"))
          (opt (svc != null && ipIn svc != [ ]) (problem (netPath "serviceCidr") "${show s.serviceCidr} (the service network, ${if net ? serviceCidr then "set here" else "k3s's default"}) holds the member address ${show (builtins.head (ipIn svc))}; with ${enablePath} set a free range"))
          (if eips == null then [ ] else if !(isList eips) then [ (problem (at [ "externalIPs" ]) "must be a list of IPv4 addresses, got ${show eips}") ]
           else concatLists (genList (i: let x = elemAt eips i; in opt (!(u.isIPv4 x)) { path = "${u.showPath (at [ "externalIPs" ])}.${toString i}"; message = "${show x} is not an IPv4 address"; }) (length eips)))
          (opt (lf != null && !(isList lf && all isString lf && lf != [ ])) (problem (at [ "lvmGlobalFilter" ]) "must be a non-empty list of lvm.conf filter strings such as \"r|^/dev/drbd.*|\", got ${show lf}"))
          (opt (to != null && !(isString to && match durationRe to != null)) (problem (at [ "bootstrapTimeout" ]) "${show to} is not a duration; write it as Go does, such as \"45m\" or \"1h30m\""))
          versionErrors
          flagErrors
          drbdOff
        ];
        warnings = concatLists [
          (opt (kv == null) (problem [ "clusters" c.name "k3s" "version" ] "not set: the NixOS default k3s is used, which nix8s cannot check against Cozystack's minimum (v1.32); set the release"))
          (opt (epm != null && elemAt epm 0 != c.endpointHost) (problem (at [ "apiServerEndpoint" ]) "${show ep} is not the cluster's own API endpoint (${c.endpointHost}); Cozystack's generic variant also points Cilium at it, so every node must reach the API there before any ingress exists"))
          (opt (length c.servers >= 2 && length c.servers / 2 * 2 == length c.servers) (problem [ "clusters" c.name "members" ] "${toString (length c.servers)} servers: OVN's raft databases run on the servers and tolerate no more failures than ${toString (length c.servers - 1)} would; use an odd number"))
          (opt unpinnedOperator (problem (at [ "manifests" "operator" ])
            "no hash is pinned for cozystack-operator-generic.yaml ${s.version} (${opPin.url}), so `nix8s cozystack bootstrap` refuses to apply it: download it and check it, take its hash with `nix store prefetch-file --json ${opPin.url}` (the \"hash\" it prints) or `nix hash to-sri --type sha256 $(nix-prefetch-url ${opPin.url})`, and set ${u.showPath (at [ "manifests" ])} = { crds = { url = \"${crdPin.url}\"; hash = ${show (crdPin.hash or null)}; }; operator = { url = \"${opPin.url}\"; hash = \"sha256-...\"; }; } (both or neither; docs/cozystack.md)"))
        ];
      };

  # ---- rendering (after validation) ------------------------------------------------------------------------------

  # The platform Package (cozystack.io/v1alpha1, cluster-scoped), whose name must equal the PackageSource the
  # operator creates; only components.platform.values is read (docs/research/cozystack.md section 4).
  package = c: s:
    let pod = u.parseCIDR s.podCidr; in {
      apiVersion = "cozystack.io/v1alpha1";
      kind = "Package";
      metadata.name = "cozystack.cozystack-platform";
      spec = {
        variant = "isp-full-generic";
        components.platform.values = {
          publishing = { inherit (s) host apiServerEndpoint; } // optionalAttrs (s.externalIPs != [ ]) { inherit (s) externalIPs; };
          networking = {
            inherit clusterDomain;
            podCIDR = s.podCidr;
            podGateway = u.intToIp (pod.network + 1);
            serviceCIDR = s.serviceCidr;
            joinCIDR = s.joinCidr;
            kubeovn.MASTER_NODES = concatStringsSep "," (map (n: c.members.${n}.ip) c.servers);
          };
        };
      };
    };

  # What the plan carries for a cluster with Cozystack (null without): the flags, and what bootstrap applies.
  plan = c:
    let s = settingsOf c; in
    if s == null then null
    else
      let
        net = c.k3s.network or { };
        epHost = elemAt (match endpointRe s.apiServerEndpoint) 0;
        userServer = c.k3s.extraArgs.server or [ ];
        userAgent = c.k3s.extraArgs.agent or [ ];
        # Flags the user already gives are not repeated.
        fresh = user: filter (f: !(elem f user));
      in {
        inherit (s) version host apiServerEndpoint apiServerHost maxPods bootstrapTimeout lvmGlobalFilter;
        flags = {
          server = fresh userServer (serverFlags s
            ++ optionals (!(net ? clusterCidr)) [ "--cluster-cidr=${s.podCidr}" ]
            ++ optionals (!(net ? serviceCidr)) [ "--service-cidr=${s.serviceCidr}" ]
            # The API certificate must name the endpoint Cozystack and Cilium use.
            ++ optionals (epHost != c.endpointHost) [ "--tls-san=${epHost}" ]
            ++ memberFlags s);
          agent = fresh userAgent (memberFlags s);
        };
        # The operator manifest's API host placeholder (cozystack Makefile: --set cozystack.apiServerHost=REPLACE_ME),
        # replaced by apiServerHost, quoted, exactly once.
        manifests = s.manifests // { placeholder = "REPLACE_ME"; };
        operator = { namespace = "cozy-system"; deployment = "cozystack-operator"; };
        crds = [ "packages.cozystack.io" "packagesources.cozystack.io" ];
        packageSource = "cozystack.cozystack-platform";
        package = package c s;
      };

  # ---- NixOS data --------------------------------------------------------------------------------------------------

  # Nothing for members of clusters without Cozystack.
  none = { tcpPorts = [ ]; udpPorts = [ ]; tcpPortRanges = [ ]; kernelModules = [ ]; filesystems = [ ]; settings = { }; defaults = { }; };

  # One member's node preparation: lists lib/nixos.nix concatenates with its own, and the rest as settings and
  # defaults (mkDefault: limits a user may raise). Sources: docs/research/cozystack.md sections 2, 3 and 5.
  nixos = cz: cfg: m: isServer:
    if cz == null then none
    else
      let vendor = cfg.hardware.cpu.vendor or null; in {
        # Geneve (Kube-OVN's tunnel) on every member.
        udpPorts = [ 6081 ];
        # cilium-health 4240, LINSTOR satellite 3366/3367, kube-ovn-cni 10665; on servers OVN's NB/SB databases and
        # their raft (6641-6644), kube-ovn-controller 10660 and kube-ovn-monitor 10661.
        tcpPorts = [ 3366 3367 4240 10665 ] ++ optionals isServer [ 6641 6642 6643 6644 10660 10661 ];
        # DRBD replication: LINSTOR's TCP port pool.
        tcpPortRanges = [ { from = 7000; to = 7999; } ];
        # Kube-OVN does not load modules itself (DISABLE_MODULES_MANAGEMENT); dm_thin_pool and dm_snapshot are what
        # the LINSTOR satellite's loader would otherwise modprobe from an empty /lib/modules. kvm by vendor only:
        # the wrong one fails systemd-modules-load. DRBD comes from the drbd extension, which Cozystack turns on.
        kernelModules = [ "br_netfilter" "overlay" "openvswitch" "geneve" "ip_tables" "iptable_nat" "vhost_net" "tun" "dm_thin_pool" "dm_snapshot" ]
          ++ optionals (vendor == "intel") [ "kvm-intel" ] ++ optionals (vendor == "amd") [ "kvm-amd" ];
        filesystems = [ "nfs" ];
        settings = {
          boot.kernel.sysctl = {
            "net.ipv4.ip_forward" = 1;
            "net.ipv4.conf.all.forwarding" = 1;
            "net.ipv6.conf.all.forwarding" = 1;
            "net.bridge.bridge-nf-call-iptables" = 1;
            "net.bridge.bridge-nf-call-ip6tables" = 1;
          };
          services.openiscsi = { enable = true; name = "iqn.2005-03.org.nixos:${m.hostName}"; };
          # Without the blacklist multipathd takes the drbd devices and LINSTOR's volumes are gone after a reboot.
          services.multipath = { enable = true; blacklist = "devnode \"^drbd[0-9]+\""; };
          # The module starts multipathd in the initrd and only adds the unit for stage 2 (not checked in a VM).
          systemd.services.multipathd.wantedBy = [ "multi-user.target" ];
          # thin-provisioning-tools and lvm.conf's thin_check paths, for LINSTOR's thin pools.
          services.lvm.boot.thin.enable = true;
          environment.etc."lvm/lvm.conf".text =
            "devices/global_filter = [ ${concatStringsSep ", " (map builtins.toJSON cz.lvmGlobalFilter)} ]\n";
          # The LINSTOR satellite mounts both as hostPath type Directory; NixOS has neither. Empty is enough: the
          # host's DRBD module is loaded, so the loader never builds one (docs/cozystack.md).
          systemd.tmpfiles.rules = [ "d /lib/modules 0755 root root -" "d /usr/src 0755 root root -" ];
          # Pods reach host-network services (LINSTOR's controller to the satellites) through Kube-OVN's ovn0.
          networking.firewall.trustedInterfaces = [ "ovn0" ];
        };
        defaults = {
          boot.kernel.sysctl = {
            "fs.inotify.max_user_watches" = 524288;
            "fs.inotify.max_user_instances" = 8192;
            "fs.inotify.max_queued_events" = 65536;
            "fs.file-max" = 2097152;
            "fs.aio-max-nr" = 1048576;
            "vm.swappiness" = 1;
          };
          # Overlay and join-network sources come back on other interfaces than a strict filter expects.
          networking.firewall.checkReversePath = "loose";
        };
      };
in {
  inherit pins defaultVersion problems plan nixos settingsOf;
}
