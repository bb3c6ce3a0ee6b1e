# The evaluation worker: a long-lived process that evaluates requests as
# the evaluator sends them. Request k is read from the named pipe `in-k`
# (reading blocks until the evaluator writes it): `{paths, slowUntil,
# withTry}`, or `null` to stop. Everything evaluated stays in memory for
# the next request (the expression's top level, shared attribute sets).
# The paths of a request are reported in order, as they are done, as trace
# lines `@@hydra <json list of {i, result}>` (i counts from 0 in each
# request): the first slowUntil paths one per line (so a path that kills
# the worker is known exactly), then params.batch per line (each trace
# costs Nix more than a small job does). `@@hydra-done` ends a request.
# With withTry, errors that tryEval catches are reported as "failed"; any
# other error ends the process, whose stderr then says why.
let
  inputs = import ./inputs.nix;
  params = builtins.fromJSON (builtins.readFile ./params.json);

  callWithInputs = f:
    if builtins.isFunction f
    then f (builtins.intersectAttrs (builtins.functionArgs f) inputs)
    else f;

  root =
    if params.mode == "flake" then
      let o = (builtins.getFlake params.flake).outputs; in
      if o ? hydraJobs then o.hydraJobs
      else if o ? checks then o.checks
      else throw "flake '${params.flake}' does not provide any Hydra jobs or checks"
    else callWithInputs (import (builtins.findFile builtins.nixPath params.expr));

  get = builtins.foldl' (v: name: (callWithInputs v).${name});

  isDerivation = v: builtins.isAttrs v && (v.type or null) == "derivation";
  asList = x: if builtins.isList x then x else [ x ];
  strings = f: xs: builtins.filter (s: s != "") (map f (asList xs));
  stringOr = x: if builtins.isString x then x else null;
  intOr = x: if builtins.isInt x then x else null;

  license = l: builtins.concatStringsSep ", " (strings
    (x: if builtins.isString x then x else if builtins.isAttrs x then stringOr (x.shortName or "") else "") l);
  maintainers = m: builtins.concatStringsSep ", " (strings
    (x: if builtins.isString x then x else if builtins.isAttrs x then stringOr (x.email or "") else "") m);

  # Only what is set is reported: the lines stay short.
  opt = name: value: if value == null then { } else { ${name} = value; };
  job = v:
    let meta = v.meta or { }; aggregate = v._hydraAggregate or false; in
    # The derivation first: its errors point at the user's expression.
    if builtins.seq v.drvPath v.system == "unknown" then throw "derivation '${v.name}' has system 'unknown'"
    else {
      kind = "job";
      name = v.name;
      system = v.system;
      drvPath = v.drvPath;
      outputs = builtins.listToAttrs (map (o: { name = o; value = v.${o}.outPath or null; }) (v.outputs or [ "out" ]));
    }
    // (if meta == { } then { } else
      opt "description" (stringOr (meta.description or null))
      // opt "license" (if meta ? license then license meta.license else null)
      // opt "homepage" (if meta ? homepage then stringOr (builtins.head (asList meta.homepage ++ [ null ])) else null)
      // opt "maintainers" (if meta ? maintainers then maintainers meta.maintainers else null)
      // opt "maxSilent" (intOr (meta.maxSilent or null))
      // opt "timeout" (intOr (meta.timeout or null))
      // opt "schedulingPriority" (intOr (meta.schedulingPriority or null))
      // (if (meta.isHydraChannel or false) == true || (meta.isChannel or false) == true then { isChannel = true; } else { }))
    // (if aggregate then {
      aggregate = true;
      constituents = map (c: c.drvPath) (builtins.filter isDerivation (v.constituents or [ ]));
      namedConstituents = builtins.filter builtins.isString (v.constituents or [ ]);
      globConstituents = v._hydraGlobConstituents or false;
    } else { });

  info = p:
    let v = callWithInputs (get root p); in
    if v == null then { kind = "null"; }
    else if isDerivation v then job v
    else if builtins.isAttrs v then { kind = "attrs"; children = builtins.filter (n: n != "recurseForDerivations") (builtins.attrNames v); }
    else { kind = "other"; type = builtins.typeOf v; };

  result = withTry: p:
    if withTry then
      let r = builtins.tryEval (let x = info p; in builtins.deepSeq x x); in
      if r.success then r.value else { kind = "failed"; }
    else let x = info p; in builtins.deepSeq x x;

  # One request: its paths' reports, line by line.
  run = req:
    let
      paths = req.paths;
      n = builtins.length paths;
      slow = if req.slowUntil < n then req.slowUntil else n;
      k = params.batch;
      # Line b covers paths [start b, start (b + 1)).
      lines = slow + (n - slow + k - 1) / k;
      start = b: if b <= slow then b else let s = slow + (b - slow) * k; in if s > n then n else s;
      report = b:
        let lo = start b; hi = start (b + 1); in
        builtins.trace ("@@hydra " + builtins.toJSON (builtins.genList
          (j: { i = lo + j; result = result req.withTry (builtins.elemAt paths (lo + j)); }) (hi - lo))) null;
    in builtins.deepSeq (builtins.genList report lines) (builtins.trace "@@hydra-done" null);

  serve = k:
    let req = builtins.fromJSON (builtins.readFile (./. + "/in-${toString k}")); in
    if req == null then null else builtins.seq (run req) (serve (k + 1));

in builtins.seq root (builtins.trace "@@hydra-ready" (serve 0))
