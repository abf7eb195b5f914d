// Alert rules on the metrics entra-sync sends (shared/observe.py), an action group that mails and
// calls a webhook, and a workbook of those metrics per target. Each rule is a scheduled log query
// over Application Insights' customMetrics (OpenTelemetry metric attributes are its
// customDimensions): one condition the README's "Alerts" table names, its threshold, and the
// dimension it fires per (a queue, a target, a subscription's resource).

@description('Required. Name of the Application Insights component the app sends telemetry to.')
param applicationInsightsName string

@description('Required. Azure region of the rules and the workbook.')
param location string

@description('Optional. Tags applied to every resource.')
param tags object = {}

@description('Optional. Prefix of the rules\' and the action group\'s names.')
param namePrefix string = 'entra-sync'

@description('Optional. Email addresses the action group mails, e.g. [\'ops@contoso.com\']; empty for none.')
param alertEmails array = []

@description('Optional. A webhook the action group calls (common alert schema), e.g. a Teams or PagerDuty endpoint; it embeds its own secret. Empty for none.')
@secure()
param alertWebhookUrl string = ''

@description('Optional. The lane\'s oldest visible message may be this many seconds old before an alert (a leaver waits on the lane: the README promises 2 s).')
@minValue(5)
param laneAgeThresholdSeconds int = 60

@description('Optional. Hours before a Graph subscription\'s expiry at which to alert (subscriptions_renew renews every 6 h to about 29 days).')
param subscriptionHoursThreshold int = 48

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'entrasync'
    enabled: true
    emailReceivers: [
      for (address, index) in alertEmails: {
        name: 'email-${index}'
        emailAddress: address
        useCommonAlertSchema: true
      }
    ]
    webhookReceivers: empty(alertWebhookUrl) ? [] : [
      {
        name: 'webhook'
        serviceUri: alertWebhookUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

// One entry per condition: the query yields one row per dimension value with the measured column,
// compared with the threshold. Windows and frequencies are ISO 8601 durations.
var rules = [
  {
    name: 'poison-depth'
    description: 'Work was given up on: a poison queue holds messages (entra-sync poison list).'
    severity: 1
    query: '''customMetrics
| where name == "entra_sync.poison.depth"
| extend queue = tostring(customDimensions["queue"])
| summarize depth = max(value) by queue'''
    measure: 'depth'
    dimension: 'queue'
    operator: 'GreaterThan'
    threshold: 0
    window: 'PT15M'
    frequency: 'PT5M'
  }
  {
    name: 'held'
    description: 'A reconciliation run (circuit breaker) or a mass change (guard) is held for approval (entra-sync status, then approve).'
    severity: 2
    query: '''customMetrics
| where name == "entra_sync.holds"
| extend target = tostring(customDimensions["target"]), by = tostring(customDimensions["by"])
| summarize holds = sum(value) by target'''
    measure: 'holds'
    dimension: 'target'
    operator: 'GreaterThan'
    threshold: 0
    window: 'PT1H'
    frequency: 'PT15M'
  }
  {
    name: 'reconcile-failed-or-missing'
    description: 'The nightly reconciliation failed, or none finished in the last 26 hours.'
    severity: 2
    query: '''customMetrics
| where name == "entra_sync.reconcile.runs"
| extend status = tostring(customDimensions["status"])
| summarize finished = sumif(value, status != "failed"), failed = sumif(value, status == "failed")
| union (print finished = 0.0, failed = 0.0)
| summarize finished = sum(finished), failed = sum(failed)
| extend problems = iff(failed > 0 or finished == 0, 1, 0)'''
    measure: 'problems'
    dimension: ''
    operator: 'GreaterThan'
    threshold: 0
    window: 'PT26H'
    frequency: 'PT1H'
  }
  {
    name: 'subscription-expiry'
    description: 'A Graph change-notification subscription is close to expiry: subscriptions_renew is not renewing it (entra-sync doctor).'
    severity: 1
    query: '''customMetrics
| where name == "entra_sync.subscription.hours_left"
| extend resource = tostring(customDimensions["resource"])
| summarize hours = min(value) by resource'''
    measure: 'hours'
    dimension: 'resource'
    operator: 'LessThan'
    threshold: subscriptionHoursThreshold
    window: 'PT30M'
    frequency: 'PT15M'
  }
  {
    name: 'target-quarantined'
    description: 'A target\'s circuit breaker is open: it is not called until its cool-down ends (entra-sync status).'
    severity: 2
    query: '''customMetrics
| where name == "entra_sync.target.quarantined"
| extend target = tostring(customDimensions["target"])
| summarize quarantined = max(value) by target'''
    measure: 'quarantined'
    dimension: 'target'
    operator: 'GreaterThan'
    threshold: 0
    window: 'PT15M'
    frequency: 'PT5M'
  }
  {
    name: 'lane-age'
    description: 'The lane (leavers, notifications, risk responses) has a message waiting longer than the threshold.'
    severity: 1
    query: '''customMetrics
| where name == "entra_sync.queue.age"
| extend queue = tostring(customDimensions["queue"])
| where queue == "sync-lane"
| summarize age = max(value) by queue'''
    measure: 'age'
    dimension: 'queue'
    operator: 'GreaterThan'
    threshold: laneAgeThresholdSeconds
    window: 'PT5M'
    frequency: 'PT1M'
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [
  for rule in rules: {
    name: '${namePrefix}-${rule.name}'
    location: location
    tags: tags
    properties: {
      displayName: '${namePrefix}: ${rule.name}'
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [
        appInsights.id
      ]
      evaluationFrequency: rule.frequency
      windowSize: rule.window
      criteria: {
        allOf: [
          {
            query: rule.query
            timeAggregation: 'Maximum'
            metricMeasureColumn: rule.measure
            dimensions: empty(rule.dimension) ? [] : [
              {
                name: rule.dimension
                operator: 'Include'
                values: [
                  '*'
                ]
              }
            ]
            operator: rule.operator
            threshold: rule.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: [
          actionGroup.id
        ]
      }
    }
  }
]

// The same metrics per target, in one workbook (Application Insights > Workbooks).
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsights.id, 'entra-sync-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'entra-sync'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: loadTextContent('workbook.json')
  }
}

output actionGroupName string = actionGroup.name
output ruleNames array = [for (rule, index) in rules: alertRules[index].name]
