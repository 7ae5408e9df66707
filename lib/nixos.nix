# NixOS option values for each member, rendered as plain data from the plan: the NixOS glue only applies them and
# adds what needs pkgs (packages). `settings` apply at normal priority, `defaults` with mkDefault so users can
# override them from nixosModules. Every option path used here must be listed in nixos-options.nix.
let
  u = import ./util.nix;
  cozystack = import ./cozystack.nix;
  inherit (builtins) any attrNames concatLists concatStringsSep elem filter genList isString length listToAttrs map;

  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: a: if cond then a else { };
  merge = builtins.foldl' u.recursiveUpdate { };

  # The fixed first-install release: changing stateVersion later is wrong, so it is not taken from nixpkgs.
  stateVersion = "25.11";

  simpleDisko = install: {
    disk.main = {
      type = "disk";
      device = install.disk;
      content = {
        type = "gpt";
        partitions = {
          ESP = {
            size = "512M";
            type = "EF00";
            content = { type = "filesystem"; format = "vfat"; mountpoint = "/boot"; mountOptions = [ "umask=0077" ]; };
          };
          root = {
            size = "100%";
            content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; };
          };
        } // optionalAttrs (install ? swapSize && install.swapSize != null) {
          swap = { size = install.swapSize; content = { type = "swap"; }; };
        };
      };
    };
  };

  # haproxy on <vip>:6443, TCP pass-through to every server. A server is in the pool only while its API server
  # answers GET /readyz with 200 (etcd, informers, post-start hooks), not merely once k3s listens: a joining
  # server's port opens long before its API is ready. /readyz answers anonymously through the authentication config
  # the plan gives the servers (apiServerAuthentication). The check speaks TLS (check-ssl) with `verify none`: it
  # sends no credentials and reads only the status code, and the cluster CA it would verify against is created by
  # k3s on its first start (after haproxy) in a directory haproxy cannot read; API clients still verify the
  # servers themselves through the pass-through. inter/fall/rise: out after 3 failed checks 2 s apart, back in after
  # 2 good ones.
  haproxyConfig = vip: servers: ''
    global
      maxconn 4096

    defaults
      mode tcp
      timeout connect 5s
      # Kubernetes watches are long-lived connections.
      timeout client 1h
      timeout server 1h

    frontend k3s-api
      bind ${vip}:6443
      default_backend k3s-servers

    backend k3s-servers
      balance roundrobin
      option httpchk
      http-check send meth GET uri /readyz
      http-check expect status 200
      default-server check check-ssl verify none inter 2s fall 3 rise 2
  '' + concatStringsSep "" (map (s: "  server ${s.name} ${s.ip}:6443\n") servers);

  # The keepalived track script modules/nixos/ha.nix defines (its command needs a store path).
  haproxyTrackScript = "nix8s-haproxy";

  # UDP ports flannel needs on every member, by backend (k3s' networking requirements); none for host-gw and none.
  flannelUDPPorts = { vxlan = [ 8472 ]; wireguard-native = [ 51820 51821 ]; };
in
model: plan:
let
  ssh = (model.raw.provisioning.ssh or { });
  authorizedKeys = ssh.authorizedKeys or [ ];

  memberOptions = c: cp: m:
    let
      mp = cp.members.${m.name};
      cfg = mp.config;
      ext = cfg.extensions or { };
      enabled = e: (ext.${e}.enable or false) == true;
      isServer = m.role == "server";
      iface = (cfg.network.interface or null);
      ifaceName = if iface != null then iface else "eth0";
      install = cfg.install or { };
      vendor = (cfg.hardware.cpu.vendor or null);
      microcode = (cfg.hardware.cpu.updateMicrocode or true);
      k = mp.k3s;
      secrets = c.secrets;
      plainToken = if isServer || !(secrets ? agentToken) then secrets.token or null else secrets.agentToken;
      servers = map (n: c.members.${n}) c.servers;
      serverIndex = builtins.listToAttrs (genList (i: { name = builtins.elemAt c.servers i; value = i; }) (length c.servers));
      keepalived = isServer && c.loadBalancer == "keepalived";
      nvidia = ext.nvidia or { };
      # Cozystack's node preparation (empty without it): its ports, modules and file systems join the lists below.
      cz = cozystack.nixos cp.cozystack cfg m isServer;
      tcpRanges = optionals isServer [ { from = 2379; to = 2380; } ] ++ cz.tcpPortRanges;
      filesystems = optionals (enabled "zfs") [ "zfs" ] ++ cz.filesystems;
    in {
      settings = merge [
        {
          networking.hostName = m.hostName;
          networking.interfaces.${ifaceName}.ipv4.addresses = [ { address = m.ip; prefixLength = c.network.prefixLength; } ];
          networking.firewall = {
            allowedTCPPorts = (if isServer then [ 6443 10250 ] else [ 10250 ]) ++ cz.tcpPorts;
            allowedUDPPorts = (flannelUDPPorts.${cp.flannelBackend} or [ ]) ++ cz.udpPorts;
          } // optionalAttrs (tcpRanges != [ ]) {
            # embedded etcd on servers: client and peer ports
            allowedTCPPortRanges = tcpRanges;
          };
          services.openssh.enable = true;
          services.k3s = {
            enable = true;
            inherit (k) role clusterInit;
            extraFlags = k.flags;
          } // optionalAttrs (k.serverAddr != null) { inherit (k) serverAddr; }
            // optionalAttrs (plainToken != null) { token = plainToken; }
            // optionalAttrs (plainToken == null && k.tokenFile != null) { inherit (k) tokenFile; }
            // optionalAttrs (plainToken == null && k.agentTokenFile != null) { inherit (k) agentTokenFile; };
        }
        (optionalAttrs (c.network.gateway != null) { networking.defaultGateway = { address = c.network.gateway; interface = ifaceName; }; })
        (optionalAttrs (c.network.nameservers != [ ]) { networking.nameservers = c.network.nameservers; })
        (optionalAttrs (authorizedKeys != [ ]) { users.users.root.openssh.authorizedKeys.keys = authorizedKeys; })
        # Without a configured interface name the member's address goes on eth0, which classic names guarantee.
        (let params = (cfg.boot.kernelParams or [ ]) ++ optionals (iface == null) [ "net.ifnames=0" ]; in
          optionalAttrs (params != [ ]) { boot.kernelParams = params; })
        (let mods = (cfg.boot.kernelModules or [ ]) ++ cz.kernelModules; in optionalAttrs (mods != [ ]) { boot.kernelModules = mods; })
        (optionalAttrs (filesystems != [ ]) { boot.supportedFilesystems = filesystems; })
        (optionalAttrs (vendor != null) { hardware.cpu.${vendor}.updateMicrocode = microcode; })
        (optionalAttrs (install ? disk && install.disk != null) { disko.devices = simpleDisko install; })
        (optionalAttrs ((cfg.disko or null) != null) { disko.devices = cfg.disko.devices; })
        (optionalAttrs keepalived {
          boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind" = 1;
          services.haproxy = { enable = true; config = haproxyConfig c.vip servers; };
          services.keepalived = {
            enable = true;
            openFirewall = true;
            # The track script runs as root; without script security keepalived warns at every start.
            enableScriptSecurity = true;
            vrrpInstances."k3s-${c.name}" = {
              interface = c.ha.interface or ifaceName;
              state = if m.name == c.firstServer then "MASTER" else "BACKUP";
              priority = if m.name == c.firstServer then 150 else 100 - serverIndex.${m.name};
              virtualRouterId = u.hashRange 1 255 c.name;
              virtualIps = [ { addr = "${c.vip}/${toString c.network.prefixLength}"; } ];
              # unicast works on networks that drop VRRP multicast
              unicastSrcIp = m.ip;
              unicastPeers = map (s: s.ip) (filter (s: s.name != m.name) servers);
              # In extraConfig, not trackScripts: a stored nixpkgs revision of keepalived/default.nix builds its
              # assertions with `concatMap (vrrpScriptAssertion i.name) i.trackScripts`, which fails evaluation
              # ("value is a set while a list was expected") whenever trackScripts is set. keepalived reads the same
              # block either way (docs/nixos-options-research.md).
              extraConfig = "track_script {\n  ${haproxyTrackScript}\n}\n";
            };
          };
        })
        (optionalAttrs (isServer && cp.apiServerAuthentication != null) {
          environment.etc.${let p = cp.apiServerAuthentication.path; in builtins.substring 5 (builtins.stringLength p - 5) p}.text =
            builtins.toJSON cp.apiServerAuthentication.content + "\n";
        })
        (optionalAttrs (enabled "zfs") {
          # ZFS refuses to import pools without a host id; derived from the host name so it never changes.
          networking.hostId = builtins.substring 0 8 (builtins.hashString "sha256" m.hostName);
        })
        (optionalAttrs (enabled "monitoring") {
          services.prometheus.exporters.node = { enable = true; openFirewall = true; };
        })
        (optionalAttrs (enabled "nvidia") {
          services.xserver.videoDrivers = [ "nvidia" ];
          hardware.graphics.enable = true;
          hardware.nvidia = { modesetting.enable = true; open = nvidia.open or true; };
          hardware.nvidia-container-toolkit.enable = nvidia.containerRuntime or true;
        })
        # DRBD needs only its kernel module (modules/nixos/extensions/drbd.nix): LINSTOR drives it, and
        # services.drbd would run `drbdadm up all` with a host helper LINSTOR does not want.
        cz.settings
      ];
      defaults = merge [
        {
          system.stateVersion = stateVersion;
          networking.useDHCP = false;
          networking.firewall.enable = true;
          services.openssh.settings = { PermitRootLogin = "prohibit-password"; PasswordAuthentication = false; };
          hardware.enableRedistributableFirmware = true;
        }
        # The standard layout has an ESP on /boot: boot with systemd-boot.
        (optionalAttrs (install ? disk && install.disk != null) {
          boot.loader.systemd-boot.enable = true;
          boot.loader.efi.canTouchEfiVariables = true;
        })
        cz.defaults
      ];
    };
in
listToAttrs (concatLists (map (cname:
  let c = model.clusters.${cname}; cp = plan.clusters.${cname}; in
  map (mname: { name = "${cname}-${mname}"; value = memberOptions c cp c.members.${mname}; }) c.names)
  (attrNames model.clusters)))
