# JSON Schema of the config, for editors (yaml-language-server). It describes shapes and formats; the rules that
# span values (references, duplicates, HA) live in validate.nix, which stays the authority.
let
  str = description: { type = "string"; inherit description; };
  pattern = p: description: { type = "string"; pattern = "^${p}$"; inherit description; };
  strList = description: { type = "array"; items.type = "string"; inherit description; };
  freeform = description: props: { type = "object"; inherit description; properties = props; additionalProperties = true; };
  # One example value, which editors show and the flake module's option docs and docs/options.md reuse.
  eg = example: s: s // { examples = [ example ]; };

  ipv4 = "(0|[1-9][0-9]{0,2})(\\.(0|[1-9][0-9]{0,2})){3}";
  cidr = "${ipv4}/(0|[1-9][0-9]?)";
  mac = "[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}";
  label = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?";

  extension = name: extra: freeform "The ${name} extension." ({ enable = { type = "boolean"; default = false; description = "Enable the ${name} extension."; }; } // extra);

  # Fields of a node template; members accept the same fields as overrides.
  nodeProps = {
    network = freeform "Network identity of the machine." {
      mac = eg "aa:bb:cc:dd:ee:01" (pattern mac "MAC address of the boot interface; PXE matches machines by it.");
      interface = eg "enp1s0" (str "Primary interface; without it the member's address goes on `eth0` (classic names, `net.ifnames=0`).");
    };
    system = eg "aarch64-linux" (str "The machine's platform, as nixpkgs names it; without it `x86_64-linux`. Lima VMs on Apple silicon are `aarch64-linux`.");
    install = freeform "Standard disk layout: GPT, 512M ESP (vfat, `/boot`), optional swap, ext4 root. Exclusive with `disko`." {
      disk = eg "/dev/nvme0n1" (pattern "/dev/.+" "Root disk: a `/dev` path (`/dev/disk/by-id/...` survives renumbering).");
      swapSize = eg "16G" (pattern "[1-9][0-9]*[KMGT]" "Swap partition size.");
    };
    disko = freeform "Your own disko layout, passed through untouched, instead of `install.disk` (not both)." {
      devices = { type = "object"; description = "`disko.devices`, in disko's own format."; };
    };
    extensions = freeform "Features enabled by flags." {
      nvidia = extension "NVIDIA GPU" {
        package = { type = "string"; enum = [ "stable" "beta" "production" "latest" ]; default = "stable"; description = "Driver channel."; };
        open = { type = "boolean"; default = true; description = "Use the open kernel modules (Turing and newer)."; };
        containerRuntime = { type = "boolean"; default = true; description = "NVIDIA container runtime for k3s's containerd."; };
      };
      drbd = extension "DRBD 9 (out-of-tree module, not the in-tree 8.4)" { devices = strList "Backing devices."; };
      zfs = extension "ZFS (with a stable `networking.hostId` derived from the host name)" { };
      monitoring = extension "Prometheus node exporter" { };
    };
    boot = freeform "Boot settings." {
      kernelParams = strList "Extra kernel command line parameters.";
      kernelModules = strList "Kernel modules loaded at boot.";
    };
    hardware = freeform "Hardware settings." {
      cpu = freeform "CPU." {
        vendor = { type = "string"; enum = [ "intel" "amd" ]; description = "Selects the microcode updates."; };
        updateMicrocode = { type = "boolean"; default = true; description = "Install the vendor's microcode updates."; };
      };
    };
  };

  member = {
    type = "object";
    description = "A member of the cluster: a node template, a role and an address; every other field overrides the template's, merged recursively (lists are replaced).";
    required = [ "node" "role" "ip" ];
    properties = nodeProps // {
      node = eg "server-nvme" (str "The node template: its name under `nodes`, or (Nix only) the template itself (`config.nix8s.nodes.x`). Required.");
      role = { type = "string"; enum = [ "server" "agent" ]; description = "k3s role: `server` (control plane and etcd; also runs workloads) or `agent`. Required."; };
      ip = eg "192.168.1.10" (pattern ipv4 "The member's IPv4 address (static, on `network.interface`). Required.");
    };
    additionalProperties = true;
  };

  cluster = {
    type = "object";
    description = "A k3s cluster. Its members become nixosConfigurations.<cluster>-<member>.";
    properties = {
      k3s = freeform "k3s settings." {
        version = eg "v1.34.2+k3s1" (pattern "v1\\.[0-9]+\\.[0-9]+\\+k3s[0-9]+" "k3s release, as k3s names them; `v1.34.x` selects `pkgs.k3s_1_34`.");
        network = freeform "Cluster networks." {
          clusterCidr = pattern cidr "Pod network, e.g. 10.42.0.0/16.";
          serviceCidr = pattern cidr "Service network, e.g. 10.43.0.0/16.";
          clusterDns = pattern ipv4 "Cluster DNS address inside serviceCidr, e.g. 10.43.0.10.";
        };
        extraArgs = freeform "Extra k3s flags." {
          server = eg [ "--disable=traefik" ] (strList "Extra flags for servers; the last `--flannel-backend` also picks the ports opened on every member.");
          agent = strList "Extra flags for agents.";
        };
      };
      ha = freeform "High availability of the API." {
        enable = { type = "boolean"; default = false; description = "Run several servers behind a virtual IP."; };
        vip = eg "192.168.1.100" (pattern ipv4 "Virtual IP of the API; required with more than one server.");
        firstServer = str "The server that initialises the cluster; default: the alphabetically first server.";
        interface = str "Interface keepalived puts the VIP on.";
        loadBalancer = { type = "string"; enum = [ "keepalived" "external" ]; default = "keepalived"; description = "keepalived + haproxy on the servers, or an external load balancer serving the VIP."; };
      };
      network = freeform "Static addressing of the members." {
        prefixLength = { type = "integer"; minimum = 1; maximum = 32; default = 24; description = "Prefix length of the members' addresses."; };
        gateway = pattern ipv4 "Default gateway.";
        nameservers = { type = "array"; items = pattern ipv4 "DNS server."; description = "DNS servers of the members."; };
      };
      secrets = freeform "Where the k3s tokens are on the nodes. Without `tokenFile` and `agentTokenFile` nix8s manages `/var/lib/nix8s/secrets/k3s-token` (servers) and `/var/lib/nix8s/secrets/k3s-agent-token` (all), delivered over SSH after the install's first boot." {
        tokenFile = eg "/run/secrets/k3s-token" (pattern "/.*" "Path of the cluster token file on servers (e.g. from sops-nix).");
        agentTokenFile = pattern "/.*" "Path of the agent token file.";
        token = str "The cluster token itself. Works, with a warning: it is copied into the world-readable Nix store; use `tokenFile` instead." // { deprecated = true; };
      };
      domain = eg "k8s.example.com" (str "The cluster's DNS domain. Cozystack publishes its services under it unless `cozystack.host` is set.");
      cozystack = {
        type = "object";
        description = "Cozystack on top of the cluster (docs/cozystack.md). With `enable` the core adds the k3s flags Cozystack's generic install needs (no flannel, kube-proxy, traefik, servicelb, local-storage or metrics-server; cluster domain `cozy.local`; `max-pods`; `--nonroot-devices`), prepares every member (kernel modules, sysctls, iSCSI, multipath, LVM filter, NFS, DRBD 9 on every member, the ports of Kube-OVN, Cilium, LINSTOR and DRBD) and renders the platform Package; `nix8s cozystack bootstrap` installs it. A k3s older than v1.32, or a `k3s.extraArgs` flag that contradicts one of these, is an error.";
        properties = {
          enable = { type = "boolean"; default = false; description = "Install Cozystack on the cluster."; };
          version = eg "v1.6.2" (pattern "v[0-9]+\\.[0-9]+\\.[0-9]+" "Cozystack release (v1.0.0 or newer: the first with a generic Kubernetes variant); default `v1.6.2`. Its manifests are pinned by hash in the core; another release needs `manifests`.");
          host = eg "k8s.example.com" (str "Publishing host: Cozystack serves its dashboard and APIs under it. Default: the cluster's `domain`; one of the two is required.");
          apiServerEndpoint = eg "https://192.168.1.100:6443" (pattern "https://[^/:]+(:[0-9]+)?/?" "The Kubernetes API as Cozystack and Cilium reach it from every node (before any ingress exists); default the cluster's own endpoint, `https://<ha.vip or the first server>:6443`. Another host is added to the servers' `--tls-san`.");
          maxPods = { type = "integer"; minimum = 1; default = 220; description = "Pods per node, on every member (`--kubelet-arg=max-pods`); set it here, not in `k3s.extraArgs`."; };
          network = freeform "Cozystack's networks; the pod and service networks are `k3s.network`'s (k3s's defaults when unset)." {
            joinCidr = eg "100.64.0.0/16" (pattern cidr "Kube-OVN's join network between nodes and pods; must not overlap the pod or service network or any member address. Default `100.64.0.0/16`.");
          };
          externalIPs = { type = "array"; items = pattern ipv4 "An address."; default = [ ]; description = "Addresses Cozystack's ingress answers on (`publishing.externalIPs`)."; };
          manifests = freeform "The release manifests, instead of the pinned ones: both or neither. Each file is applied only if its bytes have the hash." {
            crds = freeform "`cozystack-crds.yaml`." { url = str "Where to download it."; hash = pattern "sha256-[A-Za-z0-9+/]{43}=" "Its SRI sha256 hash (`nix hash file --sri FILE`)."; };
            operator = freeform "`cozystack-operator-generic.yaml` (its `REPLACE_ME` API host is replaced at bootstrap)." { url = str "Where to download it."; hash = pattern "sha256-[A-Za-z0-9+/]{43}=" "Its SRI sha256 hash."; };
          };
          lvmGlobalFilter = { type = "array"; items.type = "string"; default = [ "r|^/dev/drbd.*|" "r|^/dev/dm-.*|" "r|^/dev/zd.*|" "r|^/dev/loop.*|" ]; description = "lvm.conf's `devices/global_filter`: LVM on the host must not scan the DRBD, device-mapper, zvol and loop devices holding LINSTOR's volumes. Drop `r|^/dev/dm-.*|` on hosts whose own physical volumes are device-mapper devices (LVM on LUKS, multipath)."; };
          bootstrapTimeout = eg "45m" (pattern "([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+" "How long `nix8s cozystack bootstrap` waits for the platform to be ready (Go duration); default `45m`.");
        };
        additionalProperties = false;
      };
      members = {
        type = "object";
        description = "Members by name (a host name label): each becomes `nixosConfigurations.<cluster>-<member>`.";
        propertyNames.pattern = "^${label}$";
        additionalProperties = member;
      };
    };
    additionalProperties = true;
  };
in {
  "$schema" = "https://json-schema.org/draft/2020-12/schema";
  "$id" = "https://nix8s.dev/schema/config.json";
  title = "nix8s configuration";
  description = "Nodes (hardware templates), clusters (k3s topology) and provisioning (how machines are deployed).";
  type = "object";
  properties = {
    nodes = {
      type = "object";
      description = "Hardware templates by name.";
      additionalProperties = { type = "object"; description = "A hardware template: its fields apply to every member made from it."; properties = nodeProps; additionalProperties = true; };
    };
    clusters = {
      type = "object";
      description = "k3s clusters by name (host name labels).";
      propertyNames.pattern = "^${label}$";
      additionalProperties = cluster;
    };
    provisioning = freeform "How machines are deployed: `ssh`, `nixos-anywhere`, `pxe`, `lima`." {
      ssh = freeform "SSH access to the nodes." { authorizedKeys = strList "Public keys authorised for root on every node."; };
      nixos-anywhere = freeform "nixos-anywhere installs over SSH." {
        ssh = freeform "How to reach the machines." {
          user = str "SSH user (default root).";
          port = { type = "integer"; minimum = 1; maximum = 65535; default = 22; description = "SSH port."; };
          keyFile = str "Private key on the operator's machine.";
        };
      };
      pxe = freeform "Network boot." {
        approve = { type = "string"; enum = [ "none" "servers" "all" ]; default = "servers"; description = "Whose secrets wait for an operator after a network install: the installer's host key fingerprint must be confirmed with POST /v1/machines/{mac}/approve before the k3s tokens are delivered. servers: server members only; all: every member; none: nobody (a MAC spoofer that reports its own key gets the tokens)."; };
        server = freeform "The PXE server (nix8sd)." {
          ip = pattern ipv4 "Address the server listens on.";
          interface = str "Interface it serves.";
          dhcp = freeform "DHCP settings." {
            mode = { type = "string"; enum = [ "proxy" "full" ]; default = "proxy"; description = "proxy: beside the site's DHCP server, answers PXE clients only and hands out no addresses; full: leases addresses from range (needs range and subnet)."; };
            range = pattern "${ipv4}-${ipv4}" "Address range for full mode, e.g. 192.168.1.100-192.168.1.200.";
            subnet = pattern cidr "Subnet, e.g. 192.168.1.0/24.";
            gateway = pattern ipv4 "Router handed out in full mode.";
          };
        };
      };
      lima = let
        size = what: default: eg default (str "${what} per VM, as Lima writes sizes (binary units: `4G` is `4GiB`).") // { inherit default; };
        settings = {
          cpus = { type = "integer"; minimum = 1; default = 2; description = "CPUs per VM."; };
          memory = size "Memory" "4GiB";
          disk = size "Disk" "30GiB";
          vmType = { type = "string"; enum = [ "qemu" "vz" ]; description = "Lima's VM type; without it Lima's default (vz on macOS, qemu on Linux)."; };
          arch = { type = "string"; enum = [ "x86_64" "aarch64" ]; description = "The VMs' architecture; without it the member's `system` (x86_64-linux or aarch64-linux)."; };
          sshPortBase = { type = "integer"; minimum = 1024; maximum = 65535; description = "Fixed SSH ports on 127.0.0.1: the cluster's members in name order get this port and the next ones. Without it Lima picks a free port at every start and nix8s asks `limactl list` for it."; };
          apiPortBase = { type = "integer"; minimum = 1024; maximum = 65535; default = 16443; description = "The servers' Kubernetes API (6443) is forwarded to this port of 127.0.0.1 and the next ones, servers in name order."; };
        };
        network = eg "192.168.107.0/24" (pattern cidr "The cluster's own Lima network (`nix8s-<cluster>`, rootless user-v2): the members' addresses are DHCP reservations in it, Lima's gateway and DNS is its second address. Lima's own 192.168.5.0/24, 192.168.104.0/24, 192.168.105.0/24 and 192.168.106.0/24 are refused.");
      in freeform "Local clusters of Lima VMs, one per member running its own NixOS configuration (docs/lima.md). These settings are the defaults of every Lima cluster." (settings // {
        network = network // { description = "Shorthand for a config with one cluster: that cluster uses Lima on this network. " + network.description; };
        clusters = {
          type = "object";
          description = "The clusters that run in Lima, by name, each with its network and overrides of the settings above.";
          additionalProperties = freeform "One Lima cluster." (settings // {
            inherit network;
            members = {
              type = "object";
              description = "Per-member overrides, by member name.";
              additionalProperties = freeform "One member's VM." {
                inherit (settings) cpus memory disk;
                sshPort = { type = "integer"; minimum = 1024; maximum = 65535; description = "This member's fixed SSH port on 127.0.0.1."; };
              };
            };
          });
        };
      });
    };
  };
  additionalProperties = false;
}
