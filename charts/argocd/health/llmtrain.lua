-- Argo CD health of the llmtrain.dev kinds (Lua 5.1, as Argo CD runs it); one script for all three.
-- Healthy once the operator reports the summary condition (Ready for a DataSource, Succeeded for a
-- TrainingRun or ModelExport) True for the current generation; Degraded when it failed, stalled, or
-- waits on a dependency that failed; Suspended when suspended; Progressing otherwise.
local hs = {}
local summary_type = "Succeeded"
if obj.kind == "DataSource" then
  summary_type = "Ready"
end
local function condition(type)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end
local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil
    or (generation ~= nil and obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local message = obj.status.message or ""
local summary = condition(summary_type)
if obj.status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message
  return hs
end
if summary ~= nil and summary.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end
if obj.status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = message
  return hs
end
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = "Stalled: " .. (stalled.message or "")
  return hs
end
if summary ~= nil and (summary.reason == "DataSourceFailed" or summary.reason == "TrainingRunFailed") then
  hs.status = "Degraded"
  hs.message = message
  return hs
end
hs.status = "Progressing"
hs.message = message
return hs
