# The plan: per cluster the first server, the API endpoint, join waves, rollout order and each member's k3s
# settings. It is the contract the CLI, the daemon and the NixOS glue read; every field is JSON data.
let
  u = import ./util.nix;
  cozystack = import ./cozystack.nix;
  inherit (builtins) any attrNames concatLists elemAt filter genList head isString length listToAttrs map match mapAttrs;

  defaultTokenFile = "/var/lib/nix8s/secrets/k3s-token";
  defaultAgentTokenFile = "/var/lib/nix8s/secrets/k3s-agent-token";

  optionals = cond: xs: if cond then xs else [ ];
  flag = name: value: "--${name}=${value}";

  # The values a flag is given in a k3s argument list, in order: `--name=value` or `--name value`.
  flagValues = name: args:
    concatLists (genList (i:
      let a = elemAt args i; m = match "--${name}=(.*)" a; in
      if m != null then [ (head m) ]
      else if a == "--${name}" && i + 1 < length args then [ (elemAt args (i + 1)) ]
      else [ ]) (length args));
  # k3s keeps the last value of a flag given twice.
  lastFlag = name: default: args: let vs = flagValues name args; in if vs == [ ] then default else elemAt vs (length vs - 1);

  # An API server argument the user passes through --kube-apiserver-arg=<name>=...
  hasApiServerArg = name: args: any (v: match "${name}=.*" v != null) (flagValues "kube-apiserver-arg" args);

  # Lets anonymous requests reach the health endpoints and nothing else (Kubernetes' AnonymousAuthConfigurableEndpoints,
  # beta and on by default since 1.32, GA in 1.34): k3s runs its API server with --anonymous-auth=false, which makes an
  # anonymous GET /readyz answer 401, so a load balancer could not check readiness. k3s leaves --anonymous-auth out
  # when --authentication-config is given (k3s-io/k3s#12245, since v1.30.13/v1.31.9/v1.32.5/v1.33.1). RBAC's default
  # system:public-info-viewer role already lets anonymous users GET these paths. v1beta1 is the version 1.33 reads.
  healthAuthenticationPath = "/etc/nix8s/kube-apiserver-authentication.json";
  healthAuthentication = {
    apiVersion = "apiserver.config.k8s.io/v1beta1";
    kind = "AuthenticationConfiguration";
    anonymous = { enabled = true; conditions = map (path: { inherit path; }) [ "/readyz" "/livez" "/healthz" ]; };
  };
in
model:
let
  # How every member is reached over SSH: provisioning.nixos-anywhere.ssh (validated) with its defaults, one set
  # shared by all members, each adding its own host (one `//` per member). A provisioner that does not reach a
  # member at its IP (Lima: a port forwarded on 127.0.0.1) changes only this.
  sshSettings =
    let s = model.provisioning.nixos-anywhere.ssh or { }; orDefault = k: d: let v = s.${k} or null; in if v == null then d else v; in
    { port = orDefault "port" 22; user = orDefault "user" "root"; keyFile = s.keyFile or null; };
  # Lima members are reached on a port of 127.0.0.1 instead (lib/lima.nix): per cluster, null for the others.
  lima = import ./lima.nix model;

  clusterPlan = c:
    let
      k3s = c.k3s;
      net = k3s.network or { };
      extra = k3s.extraArgs or { };
      apiEndpoint = "https://${c.endpointHost}:6443";
      secrets = c.secrets;
      # With no secrets given, nix8s manages both tokens (gen-secrets, delivered at install). A user who brings
      # only a token file (sops-nix, ...) gets no agent token: agents then join with the cluster token.
      # A plain `secrets.token` (warned about by validate) replaces the token files.
      managed = !(secrets ? tokenFile) && !(secrets ? agentTokenFile) && !(secrets ? token);
      tokenFile = secrets.tokenFile or (if secrets ? token then null else defaultTokenFile);
      agentTokenFile = if managed then defaultAgentTokenFile else secrets.agentTokenFile or null;
      # haproxy listens on <vip>:6443 on every server (ip_nonlocal_bind), so k3s must leave *:6443 to it and
      # bind its own address only; k3s then also uses that address for its in-node loopback clients.
      bindOwnAddress = c.loadBalancer == "keepalived";
      serverArgs = extra.server or [ ];
      agentArgs = extra.agent or [ ];
      # Cozystack's flags (null without it): a part of its own, after the core's flags and before the user's.
      cz = cozystack.plan c;
      czServer = if cz == null then [ ] else cz.flags.server;
      # Once per cluster, so an agent's flags cost one concatenation, as without Cozystack.
      agentTail = (if cz == null then [ ] else cz.flags.agent) ++ agentArgs;
      # A server flag the agents learn from the servers: one backend per cluster, so every member opens its ports.
      flannelBackend = lastFlag "flannel-backend" (if cz == null then "vxlan" else "none") serverArgs;
      # Behind a load balancer (haproxy on the VIP, or an external one) the servers answer /readyz anonymously, so
      # the balancer can check readiness. A user's own authentication config or --anonymous-auth wins: then their
      # settings must allow the check (docs/nixos-options-research.md).
      healthEndpoints = c.loadBalancer != null
        && !(hasApiServerArg "authentication-config" serverArgs) && !(hasApiServerArg "anonymous-auth" serverArgs);

      # Servers hold the cluster token; agents only ever get the agent token.
      agentsTokenFile = if agentTokenFile == null then tokenFile else agentTokenFile;
      serverK3s = m:
        let isFirst = m.name == c.firstServer; in {
          inherit (m) role;
          clusterInit = isFirst;
          serverAddr = if isFirst then null else apiEndpoint;
          flags = concatLists [
            [ "--node-ip=${m.ip}" ]
            (optionals bindOwnAddress [ (flag "bind-address" m.ip) (flag "advertise-address" m.ip) ])
            (optionals (c.vip != null) [ (flag "tls-san" c.vip) ])
            (optionals (net ? clusterCidr) [ (flag "cluster-cidr" net.clusterCidr) ])
            (optionals (net ? serviceCidr) [ (flag "service-cidr" net.serviceCidr) ])
            (optionals (net ? clusterDns) [ (flag "cluster-dns" net.clusterDns) ])
            (optionals healthEndpoints [ (flag "kube-apiserver-arg" "authentication-config=${healthAuthenticationPath}") ])
            czServer
            serverArgs
          ];
          inherit tokenFile agentTokenFile;
        };
      # Built for every agent, so as few thunks as it takes: an agent is never the first server (that is a server).
      agentK3s = m: {
        inherit (m) role;
        clusterInit = false;
        serverAddr = apiEndpoint;
        flags = [ "--node-ip=${m.ip}" ] ++ agentTail;
        tokenFile = agentsTokenFile;
        agentTokenFile = null;
      };
      limaSSH = lima.ssh c.name;
      memberPlan = _: m: {
        inherit (m) name hostName role ip mac config;
        node = m.nodeName;
        k3s = if m.role == "server" then serverK3s m else agentK3s m;
        ssh = sshSettings // (if limaSSH == null then { host = m.ip; } else limaSSH m.name);
      };
    in {
      inherit (c) name firstServer servers agents;
      inherit apiEndpoint;
      # The cluster's Lima network (`{ name; subnet; gatewayArg; gateway; prefix; }`), null when not in Lima.
      lima = lima.network c.name;
      k3sVersion = k3s.version or null;
      ha = { enable = c.haEnable; inherit (c) vip loadBalancer; };
      inherit flannelBackend;
      # nix8s makes and delivers the token files (no secrets.tokenFile, agentTokenFile or token given).
      managedTokens = managed;
      # Cozystack's settings, its pinned manifests and the platform Package (lib/cozystack.nix), or null.
      cozystack = cz;
      # The API server authentication config the servers' --authentication-config points at (null: none).
      apiServerAuthentication =
        if healthEndpoints then { path = healthAuthenticationPath; content = healthAuthentication; } else null;
      # First server alone, then every other server alone (concurrent etcd joins fail, k3s-io/k3s#4335),
      # then all agents together.
      provision = [ [ c.firstServer ] ] ++ map (s: [ s ]) c.otherServers ++ optionals (c.agents != [ ]) [ c.agents ];
      # Configuration rollouts (design 8.4): agents, then the other servers, the first server last.
      rollout = c.agents ++ c.otherServers ++ [ c.firstServer ];
      # The same as waves, the form the operations run: members of one wave may go together (an operation cuts
      # the agents' wave by --max-unavailable), waves one after the other; every server is a wave of its own.
      rolloutWaves = optionals (c.agents != [ ]) [ c.agents ] ++ map (s: [ s ]) (c.otherServers ++ [ c.firstServer ]);
      # k3s version upgrades: servers first, one at a time, then agents (a kubelet must never be newer than its
      # API server).
      upgradeRollout = c.otherServers ++ [ c.firstServer ] ++ c.agents;
      upgradeRolloutWaves = map (s: [ s ]) (c.otherServers ++ [ c.firstServer ]) ++ optionals (c.agents != [ ]) [ c.agents ];
      members = mapAttrs memberPlan c.members;
    };
in {
  clusters = mapAttrs (_: clusterPlan) model.clusters;
}
