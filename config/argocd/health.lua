-- Argo CD health check of Hookrelay's WebhookEndpoint and WebhookSubscription
-- (hookrelay.dev/v1alpha1). Both kinds report in the same conditions:
--   Stalled=True                      -> Degraded (invalid spec: fix it)
--   Ready=False                       -> Degraded (reason and message say why)
--   Ready=True, reason Paused         -> Suspended (spec.paused holds deliveries)
--   Ready=True                        -> Healthy
--   anything else, or a status older
--   than the spec (observedGeneration) -> Progressing
local hs = { status = "Progressing", message = "Waiting for the controller to report status" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local ready = nil
local stalled = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Stalled" then
    stalled = condition
  end
end
local function describe(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.message = "Waiting for the controller to handle generation " .. tostring(generation)
  return hs
end
if ready == nil then
  return hs
end
if ready.status == "True" then
  if ready.reason == "Paused" then
    hs.status = "Suspended"
  else
    hs.status = "Healthy"
  end
elseif ready.status == "False" then
  hs.status = "Degraded"
end
hs.message = describe(ready)
return hs
